"""scikit-learn's results kept on disk, so that starting a search does not import it.

Importing scikit-learn costs 1-2 s of CPU (it pulls in scipy) in every process that runs
trials: each search, each worker, each requeued SLURM task. What the search asks of it
never changes for the same inputs: the stratified split indices and the digits images. So
each is computed once, by scikit-learn itself (the splits stay exactly its splits), and
kept in the cache folder (``search.cache``) under a key made of the computation's name,
scikit-learn's version and every input. An entry is written under a temporary name and
renamed into place, so workers racing on one and a process killed while writing never
leave a torn entry; an entry that cannot be read is computed again, and without a
writable cache every call computes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from search.cache import cache_dir

Arrays = dict[str, np.ndarray]


def memoized(name: str, inputs: Mapping[str, object], compute: Callable[[], Arrays]) -> Arrays:
    """``compute()``'s named arrays, read from the cache when this ``name`` was computed
    before from the same ``inputs`` (arrays by content, everything else by ``repr``)."""
    path = entry_path(name, inputs)
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # not there yet, or unreadable: compute it again
    arrays = compute()
    _store(path, arrays)
    return arrays


def entry_path(name: str, inputs: Mapping[str, object]) -> Path:
    key = hashlib.sha256(f"{name}|scikit-learn {_sklearn_version()}".encode())
    for input_name, value in sorted(inputs.items()):
        key.update(f"|{input_name}=".encode())
        if isinstance(value, np.ndarray):
            key.update(f"{value.dtype}{value.shape}".encode())
            key.update(np.ascontiguousarray(value).tobytes())
        else:
            key.update(repr(value).encode())
    return cache_dir() / "arrays" / f"{name}-{key.hexdigest()[:32]}.npz"


def _sklearn_version() -> str:
    # from the installed package's metadata: importing scikit-learn is what this avoids
    return importlib.metadata.version("scikit-learn")


def _store(path: Path, arrays: Arrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, draft = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError:
        return  # no writable cache: the next call computes again
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(draft, path)
    except OSError:
        pass
    finally:
        Path(draft).unlink(missing_ok=True)
