"""The per-user cache folder: results that are the same for every study on this machine
and cost seconds to make (an empty MLflow store, scikit-learn's split indices). Set
``$CIFAR_SEARCH_CACHE`` to move it (tests point it at a temporary folder); by default it is
``~/.cache/cifar-search``. Deleting it is always safe: everything in it is made again."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CIFAR_SEARCH_CACHE"


def cache_dir() -> Path:
    chosen = os.environ.get(CACHE_ENV)
    return Path(chosen) if chosen else Path.home() / ".cache" / "cifar-search"
