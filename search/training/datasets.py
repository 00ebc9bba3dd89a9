"""Datasets as uint8 host arrays: the CIFAR pickle reader, digits, synthetic, download.

Datasets: ``cifar10`` and ``cifar100`` (read by our own reader from the official
python-pickle folders), ``digits`` (scikit-learn's bundled 8x8 digits, upsampled to
32x32x3: real data, fully offline) and ``synthetic`` (deterministic, learnable random
images of any size and class count, for tests and benchmarks).

Arrays are ``(N, 3, H, W)`` uint8 and int64 labels on the host; ``search.training.splits``
moves the rows a run uses to the training device once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from search.errors import ConfigError
from search.training.memo import memoized

DATA_DIR_ENV = "CIFAR_DATA_DIR"
NO_DOWNLOAD_ENV = "CIFAR_NO_DOWNLOAD"  # "1": fail at once instead of trying to download
DEFAULT_DATA_DIR = "data"

# The official "python version" layouts: folder, training files, test file, meta file,
# the meta key of the class names and the label key of the batches.
_CIFAR_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"label_names",
        b"labels",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        b"fine_label_names",
        b"fine_labels",
    ),
}


class Dataset:
    """A whole dataset on the host: uint8 images ``(N, 3, H, W)``, int64 labels; ``source``
    says where it came from (a ``file://`` folder, or the code that made it).

    The test split is read when first used (``test_x`` / ``test_y``), from ``test_loader``
    when it is not given: a search never opens the test file, only a final evaluation does.
    """

    def __init__(
        self,
        name: str,
        train_x: np.ndarray,
        train_y: np.ndarray,
        test_x: np.ndarray | None = None,
        test_y: np.ndarray | None = None,
        classes: tuple[str, ...] = (),
        source: str = "",
        *,
        test_loader: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if (test_x is None) == (test_loader is None):
            raise ValueError("give either the test arrays or a test_loader")
        self.name, self.train_x, self.train_y = name, train_x, train_y
        self.classes, self.source = tuple(classes), source
        self._test = None if test_x is None else (test_x, test_y)
        self._test_loader = test_loader

    def _test_split(self) -> tuple[np.ndarray, np.ndarray]:
        if self._test is None:
            self._test = self._test_loader()
        return self._test

    @property
    def test_x(self) -> np.ndarray:
        return self._test_split()[0]

    @property
    def test_y(self) -> np.ndarray:
        return self._test_split()[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @functools.cached_property
    def digest(self) -> str:
        """The content's fingerprint: SHA-256 over the shape, dtype and bytes of the training
        split's arrays and the class names (hex, ``DIGEST_CHARS`` long). Equal data, wherever
        and whenever it is loaded, gives an equal digest; any changed pixel or label another.
        The test split is left out, so that a search can name its data without reading it;
        ``rows_digest("test")`` fingerprints it when a final run reads it. Computed once per
        object: about 0.1-0.2 s for CIFAR's training split (SHA-256 at 1-1.5 GB/s, reading
        the arrays in place)."""
        h = hashlib.sha256()
        _hash_arrays(h, self.train_x, self.train_y)
        h.update("\n".join(self.classes).encode())
        return h.hexdigest()[:DIGEST_CHARS]

    def rows_digest(self, split: str, *index_sets: np.ndarray) -> str:
        """The fingerprint of rows of ``split`` ("train" or "test"): of ``index_sets`` in
        turn (the folds of a k-fold, say), or of the whole split when none are given. It
        hashes the dataset's digest and the indices, not the pixels again, so it costs
        microseconds and still tells apart any two different selections of rows."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        h = hashlib.sha256(f"{self.digest}:{split}".encode())
        if split == "test":  # its content is not in the dataset's digest (see there)
            _hash_arrays(h, self.test_x, self.test_y)
        for indices in index_sets:
            h.update(b"|")
            h.update(_little_endian(np.asarray(indices, dtype=np.int64)))
        return h.hexdigest()[:DIGEST_CHARS]

    @functools.cached_property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (0..1 scale) of the training split: the dataset's own
        normalisation statistics. The test split is not looked at."""
        x = self.train_x.astype(np.float64) / 255.0
        return tuple(x.mean(axis=(0, 2, 3)).tolist()), tuple(x.std(axis=(0, 2, 3)).tolist())


DIGEST_CHARS = 16  # 64 bits: no collision among any realistic number of datasets


def _hash_arrays(h, *arrays: np.ndarray) -> None:
    for array in arrays:
        data = _little_endian(array)
        h.update(f"{data.dtype.str}{data.shape};".encode())
        h.update(data)


def _little_endian(array: np.ndarray) -> np.ndarray:
    """The array's bytes in one fixed order (no copy when it is already contiguous and
    little-endian), so that the digest does not depend on the machine."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``$CIFAR_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    synthetic_size: int = 2000,
    synthetic_classes: int = 10,
    download: bool = True,
) -> Dataset:
    """Load a dataset by name (cached per process, so trials in one worker read it once)."""
    if name in _CIFAR_LAYOUT:
        download = download and os.environ.get(NO_DOWNLOAD_ENV, "") in ("", "0")
        return _load_cifar(name, resolve_data_dir(data_dir).resolve(), download)
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _load_synthetic(synthetic_size, synthetic_classes)
    raise ConfigError(
        "unknown dataset; expected cifar10, cifar100, digits or synthetic",
        key="data.dataset",
        value=name,
    )


# What the official CIFAR pickles (and numpy's own array pickling, any protocol) need to
# rebuild a dict of bytes, lists and one uint8 array. Nothing here can run code.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes under pickle protocol 2
    }
)


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that builds data only: any other global (a function to call, a class to
    construct) is refused, so a crafted batch file cannot run code when it is read."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: a CIFAR batch holds only bytes, lists and a numpy array"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """One official batch file as a dict; anything but data in it is a ConfigError."""
    try:
        with path.open("rb") as fh:
            batch = _DataUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ConfigError(f"not a CIFAR batch file: {exc}", file=str(path)) from None
    if not isinstance(batch, dict):
        raise ConfigError(
            f"not a CIFAR batch file: expected a dict, got {type(batch).__name__}", file=str(path)
        )
    return batch


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> ``(N, 3, 32, 32)`` uint8 and int64 labels.

    Each 3072-byte row holds the 1024 red, then 1024 green, then 1024 blue values of a
    32x32 image in row-major order, so a plain reshape to (3, 32, 32) is exact.
    """
    batch = _unpickle(path)
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ConfigError(
            f"expected a (N, 3072) uint8 'data' array, got shape {data.shape}", file=str(path)
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(batch[label_key], dtype=np.int64)


@functools.lru_cache(maxsize=4)
def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    folder, train_files, test_file, meta_file, names_key, label_key = _CIFAR_LAYOUT[name]
    base = root / folder
    needed = [base / f for f in [*train_files, meta_file]]  # the test file: when it is used
    if not all(p.is_file() for p in needed):
        if download:
            _download_cifar(name, root)
        if not all(p.is_file() for p in needed):
            raise ConfigError(
                f"{name} not found: expected {base}/ with "
                f"{', '.join(train_files + [test_file, meta_file])} "
                f"(the official python version, e.g. {_ARCHIVES[name]} from "
                f"https://www.cs.toronto.edu/~kriz/cifar.html, extracted into "
                f"{root}); set --data-dir or ${DATA_DIR_ENV}"
            )
    parts = [read_cifar_batch(base / f, label_key) for f in train_files]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    classes = tuple(c.decode() for c in _unpickle(base / meta_file)[names_key])

    def read_test() -> tuple[np.ndarray, np.ndarray]:
        path = base / test_file
        if not path.is_file():
            raise ConfigError(
                f"the test split is missing: expected {path} (the final evaluation reads it; "
                f"the search does not)",
                file=str(path),
            )
        return read_cifar_batch(path, label_key)

    return Dataset(
        name, train_x, train_y, None, None, classes, base.as_uri(), test_loader=read_test
    )


_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def _download_cifar(name: str, root: Path) -> None:
    """Fetch, md5-verify and extract the official archive through torchvision."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    made = [p for p in (root, *root.parents) if not p.exists()]  # root first, then parents
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root=str(root), train=True, download=True)
    except Exception as exc:  # offline, proxy, disk: any failure ends in one clear message
        if made:  # the folders made for the download, with what it left: none was there
            shutil.rmtree(made[-1], ignore_errors=True)
        raise ConfigError(
            f"{name} is not in {root} and downloading it failed "
            f"({type(exc).__name__}: {exc}); download {_ARCHIVES[name]} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
            f"{root}, or set --data-dir / ${DATA_DIR_ENV}"
        ) from None


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, upsampled to 32x32 grey-as-RGB, split 80/20 (made
    once per machine, then read from the cache: see ``memo``)."""
    arrays = memoized("digits", {"torch": str(torch.__version__)}, _make_digits)
    return Dataset(
        "digits",
        arrays["train_x"],
        arrays["train_y"],
        arrays["test_x"],
        arrays["test_y"],
        tuple(str(d) for d in range(10)),
        "sklearn.datasets.load_digits (upsampled to 32x32x3, stratified 80/20 split, seed 0)",
    )


def _make_digits() -> dict[str, np.ndarray]:
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).numpy()
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    return {
        "train_x": images[train_idx],
        "train_y": labels[train_idx],
        "test_x": images[test_idx],
        "test_y": labels[test_idx],
    }


@functools.lru_cache(maxsize=4)
def _load_synthetic(size: int, num_classes: int) -> Dataset:
    """Class prototypes plus noise and a random shift: learnable, but not trivially."""
    rng = np.random.default_rng(1234)
    prototypes = rng.uniform(0, 255, size=(num_classes, 3, 8, 8))
    prototypes = prototypes.repeat(4, axis=2).repeat(4, axis=3)  # blocky 32x32 patterns

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        x = prototypes[labels] + rng.normal(0, 60, size=(n, 3, 32, 32))
        shifts = rng.integers(-3, 4, size=(n, 2))
        x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shifts)])
        return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = sample(size)
    test_x, test_y = sample(max(num_classes, size // 5))
    return Dataset(
        "synthetic",
        train_x,
        train_y,
        test_x,
        test_y,
        tuple(f"class_{i}" for i in range(num_classes)),
        f"search.training.datasets synthetic (size {size}, {num_classes} classes, seed 1234)",
    )
