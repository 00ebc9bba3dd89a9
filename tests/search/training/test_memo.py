"""scikit-learn's results kept on disk (``memo``): the cached splits are scikit-learn's own,
a second call reads them without computing, a torn or unreadable entry is computed again,
and a search with a warm cache does not import scikit-learn at all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from search.training import datasets, memo, splits

ROOT = Path(__file__).resolve().parents[3]


def _labels(n: int = 500, classes: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "arrays").glob("*.npz"))


def test_cached_splits_are_scikit_learns(tmp_path: Path) -> None:
    labels = _labels()
    rows = np.arange(len(labels))
    for _ in range(2):  # computed, then read back from the cache
        train, val = splits.holdout_split(labels, 0.2, seed=3)
        want = train_test_split(rows, test_size=0.2, stratify=labels, random_state=3)
        assert np.array_equal(train, np.sort(want[0]))
        assert np.array_equal(val, np.sort(want[1]))
        folds = splits.kfold_splits(labels, 4, seed=5)
        sk = StratifiedKFold(n_splits=4, shuffle=True, random_state=5).split(rows, labels)
        for (train, val), (want_train, want_val) in zip(folds, sk, strict=True):
            assert np.array_equal(train, np.sort(want_train))
            assert np.array_equal(val, np.sort(want_val))
        keep = splits.subsample(labels, 120, seed=1)
        want_keep = train_test_split(rows, train_size=120, stratify=labels, random_state=1)[0]
        assert np.array_equal(keep, np.sort(want_keep))


def test_a_second_call_reads_the_entry_and_inputs_make_the_key(tmp_path: Path) -> None:
    labels = _labels()
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"rows": np.arange(5)}

    first = memo.memoized("probe", {"labels": labels, "seed": 0}, compute)
    again = memo.memoized("probe", {"labels": labels, "seed": 0}, compute)
    assert len(calls) == 1 and np.array_equal(first["rows"], again["rows"])
    memo.memoized("probe", {"labels": labels, "seed": 1}, compute)  # another seed
    changed = labels.copy()
    changed[0] = (changed[0] + 1) % 7
    memo.memoized("probe", {"labels": changed, "seed": 0}, compute)  # one label changed
    assert len(calls) == 3


def test_the_version_numpy_scalars_and_wrong_inputs(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"rows": np.arange(3)}

    memo.memoized("versioned", {"seed": 0}, compute)
    memo.memoized("versioned", {"seed": np.int64(0)}, compute)  # the same seed
    assert len(calls) == 1
    memo.memoized("versioned", {"seed": 0}, compute, version=2)  # the computation changed
    assert len(calls) == 2
    with pytest.raises(TypeError, match="plain scalars"):
        memo.memoized("versioned", {"seeds": [0, 1]}, compute)


def test_an_entry_holding_another_key_is_not_read(tmp_path: Path) -> None:
    labels = _labels(seed=21)
    right = splits.holdout_split(labels, 0.1, seed=0)
    other = splits.holdout_split(labels, 0.1, seed=1)
    inputs = {"labels": labels, "val_fraction": 0.1}
    path = memo.entry_path("holdout", {**inputs, "seed": 0})
    path.write_bytes(memo.entry_path("holdout", {**inputs, "seed": 1}).read_bytes())
    again = splits.holdout_split(labels, 0.1, seed=0)  # a valid archive, but seed 1's
    assert np.array_equal(again[1], right[1]) and not np.array_equal(again[1], other[1])


def test_entries_follow_the_umask_and_stale_drafts_are_removed(tmp_path: Path) -> None:
    cache = Path(os.environ["CIFAR_SEARCH_CACHE"]) / "arrays"
    labels = _labels(seed=31)
    path = memo.entry_path("holdout", {"labels": labels, "val_fraction": 0.1, "seed": 0})
    cache.mkdir(parents=True, exist_ok=True)
    stale, fresh = (path.with_name(f".{path.name}.{pid}.00000000.tmp") for pid in (1, 2))
    for draft in (stale, fresh):
        draft.write_bytes(b"half an entry")  # left by writers killed mid-write
    os.utime(stale, (1, 1))
    old_umask = os.umask(0o027)
    try:
        splits.holdout_split(labels, 0.1, seed=0)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o640
    assert not stale.exists() and fresh.exists()  # a recent one may be another writer's


def test_without_a_home_folder_splits_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIFAR_SEARCH_CACHE")

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    labels = _labels(seed=41)
    train, val = splits.holdout_split(labels, 0.1, seed=0)
    assert len(train) + len(val) == len(labels)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_torn_entry_is_computed_again(tmp_path: Path, damage: str) -> None:
    cache = Path(os.environ["CIFAR_SEARCH_CACHE"])
    labels = _labels(seed=11)
    train, val = splits.holdout_split(labels, 0.1, seed=0)
    entry = memo.entry_path("holdout", {"labels": labels, "val_fraction": 0.1, "seed": 0})
    assert entry in _entries(cache)
    whole = entry.read_bytes()
    entry.write_bytes(
        {"truncated": whole[: len(whole) // 2], "garbage": b"not a zip" * 50, "empty": b""}[damage]
    )
    again_train, again_val = splits.holdout_split(labels, 0.1, seed=0)
    assert np.array_equal(again_train, train) and np.array_equal(again_val, val)
    assert entry.read_bytes() == whole  # written anew


def test_without_a_writable_cache_every_call_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CIFAR_SEARCH_CACHE", str(blocked / "cache"))
    labels = _labels()
    first = splits.holdout_split(labels, 0.2, seed=0)
    second = splits.holdout_split(labels, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not list(tmp_path.glob("**/.*.npz*"))  # no temporary file left behind


def test_the_unstratified_warning_is_given_on_cached_reads_too() -> None:
    labels = np.array([0] * 30 + [1] * 30 + [2])  # class 2 has one image: cannot stratify
    for _ in range(2):
        with pytest.warns(UserWarning, match="not stratified"):
            train, val = splits.holdout_split(labels, 0.1, seed=0)
        assert len(train) + len(val) == len(labels)


def test_digits_from_the_cache_are_the_ones_made() -> None:
    made = datasets._make_digits()
    entry = memo.entry_path("digits", {"torch": str(datasets.torch.__version__)})
    entry.unlink(missing_ok=True)
    datasets._load_digits.cache_clear()
    first = datasets._load_digits()  # makes and stores
    assert entry.is_file()
    datasets._load_digits.cache_clear()
    read = datasets._load_digits()  # reads the entry
    for got in (first, read):
        assert np.array_equal(got.train_x, made["train_x"])
        assert np.array_equal(got.test_y, made["test_y"])
        assert got.train_x.dtype == np.uint8 and got.train_y.dtype == np.int64


@pytest.mark.slow
def test_a_search_with_a_warm_cache_does_not_import_scikit_learn(tmp_path: Path) -> None:
    """The point of the cache: -X importtime lists every module the search imports. The
    cache is this test's own (the empty MLflow store copied in: it is not the point)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for template in Path(os.environ["CIFAR_SEARCH_CACHE"]).glob("mlflow-*-empty.db"):
        shutil.copyfile(template, cache / template.name)
    env = {**os.environ, "CIFAR_SEARCH_CACHE": str(cache)}
    command = [sys.executable, "-X", "importtime", str(ROOT / "cli.py"), "search"]
    options = ["--study", "smoke", "--n-trials", "1", "--set", "optim.epochs=1", "--no-retrain"]
    runs = []
    for name in ("cold", "warm"):
        env["CIFAR_SEARCH_HOME"] = str(tmp_path / name)
        done = subprocess.run(
            command + options, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append({line.split("|")[-1].strip() for line in done.stderr.splitlines()})
    cold, warm = runs
    assert "sklearn" in cold  # the first search on this cache computes the splits with it
    assert not {m for m in warm if m.split(".")[0] == "sklearn"}
