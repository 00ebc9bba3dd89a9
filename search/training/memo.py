"""scikit-learn's results kept on disk, so that starting a search does not import it.

Importing scikit-learn costs 1-2 s of CPU (it pulls in scipy) in every process that runs
trials: each search, each worker, each requeued SLURM task. What the search asks of it
never changes for the same inputs: the stratified split indices and the digits images. So
each is computed once, by scikit-learn itself (the splits stay exactly its splits), and
kept in the cache folder (``search.cache``) under a key made of the computation's name and
version, scikit-learn's and numpy's versions and every input. An entry is written under a
temporary name and renamed into place, so workers racing on one and a process killed
while writing never leave a torn entry; an entry that cannot be read, or holds another
key, is computed again; without a usable cache every call computes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from search.cache import cache_dir

Arrays = dict[str, np.ndarray]
_KEY = "_memo_key"  # each entry holds its own key: a damaged or foreign one is not read
_STALE_DRAFT_S = 3600.0  # a draft this old was left by a writer killed mid-write


def memoized(
    name: str, inputs: Mapping[str, object], compute: Callable[[], Arrays], *, version: int = 1
) -> Arrays:
    """``compute()``'s named arrays, read from the cache when this ``name`` (at this
    ``version``: raise it whenever ``compute`` changes) was computed before from the same
    ``inputs``: arrays by dtype, shape and content, plain scalars and strings by ``repr``."""
    key = _key(name, version, inputs)
    try:
        path = _path(name, key)
    except (OSError, RuntimeError):  # no home folder to put a cache in
        return compute()
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if arrays.pop(_KEY).item() == key:
            return arrays
    except Exception:  # noqa: BLE001 - missing, or unreadable in any way: compute it again
        pass
    arrays = compute()
    _store(path, {**arrays, _KEY: np.array(key)})
    return arrays


def entry_path(name: str, inputs: Mapping[str, object], *, version: int = 1) -> Path:
    return _path(name, _key(name, version, inputs))


def _path(name: str, key: str) -> Path:
    return cache_dir() / "arrays" / f"{name}-{key[:32]}.npz"


def _key(name: str, version: int, inputs: Mapping[str, object]) -> str:
    versions = f"scikit-learn {_version('scikit-learn')} numpy {np.__version__}"
    key = hashlib.sha256(f"{name} v{version}|{versions}".encode())
    for input_name, value in sorted(inputs.items()):
        key.update(f"|{input_name}=".encode())
        if isinstance(value, np.ndarray):
            key.update(f"{value.dtype}{value.shape}".encode())
            key.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, (bool, int, float, str, np.generic)):
            plain = value.item() if isinstance(value, np.generic) else value  # np.int64(3) is 3
            key.update(f"{type(plain).__name__}:{plain!r}".encode())
        else:  # a repr may be abridged (large containers): it would not key the content
            raise TypeError(f"memoized inputs are arrays or plain scalars, not {type(value)}")
    return key.hexdigest()


def _version(package: str) -> str:
    # from the installed package's metadata: importing scikit-learn is what this avoids
    return importlib.metadata.version(package)


def _store(path: Path, arrays: Arrays) -> None:
    """Write under a temporary name, then rename: readers see a whole entry or none. The
    entry gets the umask's permissions, so a cache shared by a group is readable by it."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_drafts(path)
        handle = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(draft, path)
    except OSError:
        pass  # no writable cache: the next call computes again
    finally:
        with contextlib.suppress(OSError):
            draft.unlink(missing_ok=True)


def _remove_stale_drafts(path: Path) -> None:
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_DRAFT_S:
                old.unlink()
        except OSError:
            pass  # another writer removed it first
