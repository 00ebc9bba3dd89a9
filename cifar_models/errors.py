"""The one exception type that user-facing mistakes in model configuration raise."""

from __future__ import annotations


class ModelConfigError(ValueError):
    """A model name, knob name or knob value that the user got wrong.

    ``key`` is ``"name"`` for the model name (or ``"num_classes"``), otherwise the
    knob's name; ``value`` is what was given. Callers (CLI, search space) can point
    at the offending setting without parsing the one-line message.
    """

    def __init__(
        self, message: str, *, key: str, value: object = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        # What is wrong without saying where ("must be an odd integer >= 1"), for callers
        # that name the setting themselves (the search's config keys, a study file).
        self.reason = reason or message
