"""The one exception type that user-facing mistakes in model configuration raise, and the
spelling suggestion its messages (and the search tool's) offer."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells, or None. First by the fewest edits
    (insert, delete, replace, swap two neighbours; case ignored), at most a third of the
    word's length (one at least): ``resnet2O`` is one edit from ``resnet20``, two from
    ``resnet32``. Ties go to the choice listed first. A word with no such neighbour (a
    shortened name, ``n_startup`` for ``n_startup_trials``) gets difflib's closest match."""
    if not isinstance(word, str):
        return None
    options = list(dict.fromkeys(choices))
    limit = max(1, len(word) // 3)
    by_edits = [(_edits(word.lower(), c.lower()), i, c) for i, c in enumerate(options)]
    near = [t for t in by_edits if t[0] <= limit]
    if near:
        return min(near)[2]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _edits(a: str, b: str) -> int:
    """Optimal-string-alignment distance: Levenshtein plus swaps of neighbours."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]
