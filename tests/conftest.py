"""Shared fixtures: tiny datasets written in the official CIFAR pickle format; the tiny
study file (``study_file``); one study searched through the command line once per session
(``searched``), with private copies for the tests that change it (``searched_copy``).

The pixel pattern proves the reader decodes planes and rows in the right order: in image
``i`` the red plane counts rows, the green plane counts columns, the blue plane holds
``i % 256`` — a reader that mixed planes, or transposed rows and columns, fails.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from in_process import copy_workdir, forget_mlflow_runs, run_cli
from tiny_study import SEARCHED_STUDY, write_study


def pattern_rows(n: int) -> np.ndarray:
    """``n`` rows of 3072 bytes: R plane = row*8, G plane = col*8, B plane = i % 256."""
    r = np.repeat(np.arange(32) * 8, 32)  # row-major: value depends on the row
    g = np.tile(np.arange(32) * 8, 32)  # value depends on the column
    rows = np.empty((n, 3072), dtype=np.uint8)
    rows[:, :1024] = r
    rows[:, 1024:2048] = g
    rows[:, 2048:] = (np.arange(n) % 256)[:, None]
    return rows


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(
    root: Path, per_batch: int = 20, n_test: int = 40, scramble_test: bool = False
) -> Path:
    """A CIFAR-10 folder with 5 training batches of ``per_batch`` images each; with
    ``scramble_test`` the test batch gets random labels and random pixels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    _dump(base / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch})
    for b in range(1, 6):
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        _dump(
            base / f"data_batch_{b}",
            {
                b"batch_label": b"training batch",
                b"labels": labels,
                b"data": pattern_rows(per_batch),
                b"filenames": [b"x.png"] * per_batch,
            },
        )
    test_labels, test_rows = [i % 10 for i in range(n_test)], pattern_rows(n_test)
    if scramble_test:
        rng = np.random.default_rng(99)
        test_labels = rng.integers(0, 10, n_test).tolist()
        test_rows = rng.integers(0, 256, test_rows.shape, dtype=np.uint8)
    _dump(base / "test_batch", {b"labels": test_labels, b"data": test_rows})
    return root


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    coarse = [f"super{i:02d}".encode() for i in range(20)]
    _dump(base / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    for name, n in (("train", n_train), ("test", n_test)):
        _dump(
            base / name,
            {
                b"fine_labels": [i % 100 for i in range(n)],
                b"coarse_labels": [i % 20 for i in range(n)],
                b"data": pattern_rows(n),
            },
        )
    return root


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "cifar")


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    return write_cifar100(tmp_path / "cifar")


@pytest.fixture
def make_cifar10():
    """The CIFAR-10 folder writer, for tests that need several variants."""
    return write_cifar10


def pytest_configure(config):
    """The tests' own training runs single-threaded: their tiny models gain nothing from
    intra-op parallelism, and spinning OpenMP threads slow them down tenfold whenever
    another process shares the cores (the other pytest-xdist worker, the worker processes
    the process-level tests start, a second test suite). Processes the tests start keep
    torch's default."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA; on a machine without it they are reported as skipped
    (run them on a GPU machine with ``pytest -m gpu``)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def cuda_path_on_cpu(monkeypatch):
    """Run the CUDA code path (bf16 autocast + channels_last) on the CPU."""
    from search.training import device

    monkeypatch.setattr(device, "FAST_PATH_DEVICES", frozenset({"cuda", "cpu"}))


@pytest.fixture
def study_file(tmp_path: Path):
    """``study_file(name="tiny", study=..., space=..., fixed=..., retrain=..., ablation=...)``
    writes ``tmp_path/<name>.toml``: the tiny study (tests/tiny_study.py) with these changes."""
    return functools.partial(write_study, tmp_path)


@pytest.fixture(scope="session")
def searched(tmp_path_factory) -> Path:
    """A working directory where ``cli.py search --study tiny.toml`` ran once (in this
    process) with its final retrain: ``tiny.toml``, ``mlruns/`` and the command's output
    in ``first-search.log``. Shared by every test of the session: only read it (run
    read-only commands in it, write outputs elsewhere); a test that runs a command that
    writes to the study or to MLflow takes ``searched_copy``. Tests that use it are in the
    xdist group "searched", so that the search runs once."""
    work = tmp_path_factory.mktemp("searched")
    write_study(work, "tiny", **SEARCHED_STUDY)
    result = run_cli("search", "--study", work / "tiny.toml", "--device", "cpu", cwd=work)
    assert result.exit_code == 0, result.output
    (work / "first-search.log").write_text(result.stdout)
    return work


@pytest.fixture
def searched_copy(searched: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of ``searched`` for a test that adds to the study or its MLflow runs
    (with the same run ids: MLflow's memory of where their artifacts are is emptied)."""
    forget_mlflow_runs()
    yield copy_workdir(searched, tmp_path / "searched")
    forget_mlflow_runs()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tool's cache (the empty MLflow store it copies) for this session, not ~/.cache."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def home_in_tmp_path(tmp_path: Path, session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's run state goes to its own tmp_path/mlruns (``CIFAR_SEARCH_HOME``), never
    to the checkout's mlruns/; helpers that run a command elsewhere set their own."""
    monkeypatch.setenv("CIFAR_SEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("CIFAR_SEARCH_CACHE", str(session_cache))
