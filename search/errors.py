"""The one exception type for mistakes a user can make (bad study file, unknown model,
missing data, bad ``--set``). The CLI turns it into a one-line message and exit code 2."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cifar_models.errors import closest

_UNSET = object()


class ConfigError(Exception):
    """A user error, located by file, key and value where known.

    ``str(err)`` is a single line such as
    ``studies/smoke.toml: optim.lr = 'fast': expected a float``.
    """

    def __init__(
        self, message: str, *, file: str | None = None, key: str | None = None, value: Any = _UNSET
    ) -> None:
        self.message = message
        self.file = file
        self.key = key
        self.value = value
        super().__init__(str(self))

    def with_file(self, file: str) -> ConfigError:
        """The same error, located in ``file`` (keeps an already-set file)."""
        return ConfigError(self.message, file=self.file or file, key=self.key, value=self.value)

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.key is not None:
            where.append(self.key if self.value is _UNSET else f"{self.key} = {self.value!r}")
        text = ": ".join(where + [self.message])
        return " ".join(text.split())  # one line, whatever the message held


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is a few edits away (``closest``), else ''."""
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""
