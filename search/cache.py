"""The per-user cache folder: results that are the same for every study on this machine
and cost seconds to make (an empty MLflow store, scikit-learn's split indices). Set
``$CIFAR_SEARCH_CACHE`` to move it (tests point it at a temporary folder); by default it is
``~/.cache/cifar-search``. Deleting it is always safe: everything in it is made again."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CIFAR_SEARCH_CACHE"


def cache_dir() -> Path:
    """The folder (not made here). Without ``$CIFAR_SEARCH_CACHE`` and without a home
    folder (``$HOME`` unset, a user id with no passwd entry, as in some containers) there
    is none: ``OSError``, which every user of the cache takes as "compute instead"."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen)
    try:
        return Path.home() / ".cache" / "cifar-search"
    except RuntimeError as exc:
        raise OSError(f"no cache folder: {exc}; set ${CACHE_ENV}") from None
