"""Checkpoint files: atomic writes that a kill in the middle of a write cannot break, and
safe reads where a truncated, corrupt or foreign file is a one-line warning and a fallback
(the previous version, else none), never an exception."""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest
import torch

from search.store.checkpoints import SLOW_WRITE_ENV, Checkpoint, run_hash


def _state(epoch: int) -> dict:
    return {"epoch": epoch, "weights": torch.full((64, 64), float(epoch)), "history": [epoch]}


def _load(checkpoint: Checkpoint) -> tuple[dict | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = checkpoint.load()
    return state, [str(w.message) for w in caught]


def test_save_keeps_the_previous_version_and_loads_the_newest(tmp_path):
    ck = Checkpoint(tmp_path / "run" / "fold0.pt", "abc")
    assert _load(ck) == (None, [])  # nothing yet: start at epoch 1, no warning
    ck.save(_state(1))
    ck.save(_state(2))
    state, problems = _load(ck)
    assert state["epoch"] == 2 and torch.equal(state["weights"], torch.full((64, 64), 2.0))
    assert problems == []
    assert sorted(p.name for p in ck.path.parent.iterdir()) == ["fold0.prev.pt", "fold0.pt"]
    ck.remove()
    assert not list(ck.path.parent.iterdir())


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
        (lambda p: p.write_bytes(b"\x00garbage" * 100), "unreadable"),
        (lambda p: torch.save({"format": 1, "run_hash": "other"}, p), "another run"),
        (lambda p: torch.save([1, 2, 3], p), "not a checkpoint"),
    ],
    ids=["truncated", "corrupt", "foreign", "not-a-checkpoint"],
)
def test_a_damaged_checkpoint_falls_back_to_the_previous_with_one_warning(tmp_path, damage, why):
    ck = Checkpoint(tmp_path / "fold0.pt", "abc")
    ck.save(_state(1))
    ck.save(_state(2))
    damage(ck.path)
    state, problems = _load(ck)
    assert state is not None and state["epoch"] == 1  # one epoch lost, nothing else
    assert len(problems) == 1 and "\n" not in problems[0]
    assert str(ck.path) in problems[0] and why in problems[0]
    assert "trying the previous checkpoint" in problems[0]
    # both damaged: a warning for each, and the run starts at epoch 1
    damage(ck.previous)
    state, problems = _load(ck)
    assert state is None and len(problems) == 2 and "starting from epoch 1" in problems[1]


def test_a_checkpoint_that_could_run_code_is_refused(tmp_path):
    """weights_only: a pickle that would call a function on load is not executed."""

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "fold0.pt"
    torch.save({"run_hash": "abc", "payload": Evil()}, path)
    state, problems = _load(Checkpoint(path, "abc"))
    assert state is None and "unreadable" in problems[0]
    assert not (tmp_path / "pwned").exists()


def test_kill_9_in_the_middle_of_a_write_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    """A real process writes (slowly, through the real write path) and is killed while
    its temporary file is half-written, several times at different moments."""
    ck = Checkpoint(tmp_path / "fold0.pt", "abc")
    ck.save(_state(1))
    monkeypatch.setenv(SLOW_WRITE_ENV, "0.01")
    for attempt, delay in enumerate((0.0, 0.03, 0.08, 0.15)):
        pid = os.fork()
        if pid == 0:  # the child: write epoch 2 until killed
            try:
                ck.save(_state(2 + attempt))
            finally:
                os._exit(0)
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob(".fold0.pt.*.tmp")):
            assert time.monotonic() < deadline, "the write never started"
            time.sleep(0.001)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the write finished before the kill: make it slower"
        state, problems = _load(ck)
        assert state is not None and problems == []
        assert state["epoch"] == 1  # the new one never replaced it
    monkeypatch.delenv(SLOW_WRITE_ENV)
    ck.save(_state(9))  # the next write clears the half-written leftovers
    assert not list(tmp_path.glob("*.tmp")) and _load(ck)[0]["epoch"] == 9


def test_the_run_hash_ignores_how_a_run_is_checkpointed_but_not_what_it_computes():
    from search.config import TrialConfig

    cfg = TrialConfig()
    same = cfg.with_overrides({"runtime.checkpoint_every": 3, "runtime.keep_checkpoints": True})
    assert run_hash(cfg, fold=0) == run_hash(same, fold=0)
    assert run_hash(cfg, fold=0) != run_hash(cfg, fold=1)
    assert run_hash(cfg) != run_hash(cfg.with_overrides({"optim.lr": 0.2}))
    assert run_hash(cfg) != run_hash(cfg.with_overrides({"model.name": "resnet56"}))


TRAIN = [
    "train", "--dataset", "synthetic", "--model", "improved_cnn", "--device", "cpu",
    "--set", "model.width=0.25", "--set", "data.synthetic_size=240", "--set", "optim.epochs=3",
    "--set", "runtime.keep_checkpoints=true", "--test",
]  # fmt: skip


def test_a_damaged_or_foreign_checkpoint_costs_a_warning_not_the_run(tmp_path):
    """``train --out`` rerun on its kept checkpoints: a truncated newest one falls back to
    the one before (one epoch trained again, the same model at the end); a checkpoint of
    another config is not used (the run starts at epoch 1); each says so in one line."""
    from in_process import run_cli

    out = tmp_path / "run"
    first = run_cli(*TRAIN, "--out", out, cwd=tmp_path)
    assert first.exit_code == 0, first.output
    model = torch.load(out / "model.pt", weights_only=True)
    newest = out / "checkpoints" / "final.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated

    again = run_cli(*TRAIN, "--out", out, cwd=tmp_path)
    assert again.exit_code == 0, again.output
    warning = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(newest) in warning[0] and "previous" in warning[0]
    assert "continuing from" in again.stdout and "2 epochs restored" in again.stdout
    assert [line for line in again.stdout.splitlines() if "epoch 3/3" in line][0].count(
        "restored"
    ) == 0  # epoch 3 trained again, epochs 1-2 restored
    rerun = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(model[k], rerun[k]) for k in model)

    other = run_cli(*TRAIN, "--set", "optim.lr=0.3", "--out", out, cwd=tmp_path)
    assert other.exit_code == 0, other.output
    assert "belongs to another run" in other.stderr and "continuing from" not in other.stdout
