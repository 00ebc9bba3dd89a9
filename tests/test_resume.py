"""Lose at most one epoch, with real processes: workers killed (kill -9) at random moments,
also in the middle of a checkpoint write, and stopped by SIGTERM or SIGUSR1 mid-epoch; a
k-fold trial killed in fold 2, a retrain killed in seed 2 of 3, an ablation killed in a
variant, ``train --out`` stopped. Each interrupted run continues from its checkpoint and
ends bit-identical to the same config trained here without interruption (single-threaded,
like the fork server's children, on the CPU), having retrained at most the epoch it was in.

Every process comes from the fork server (tests/forkserver.py). The random moments come
from a seeded generator whose seed is in the test's output.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from in_process import isolated
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from resilience_helpers import env_for, finished, mlflow_trial_runs, spawn_cli
from tiny_study import write_study

from search.config import TrialConfig
from search.engine.coordination import PROGRESS_ATTR, RESUMED_AT_ATTR
from search.reporting import study_rows
from search.store import config_of
from search.store.checkpoints import SLOW_WRITE_ENV
from search.training import final_run, load_dataset, validate

EPOCHS = 4
# 1000 synthetic images: epochs of about half a second, long enough to be hit in the middle
FIXED = {"optim.epochs": EPOCHS, "data.synthetic_size": 1000}


def _study_file(work: Path, n_trials: int = 3, **fixed) -> Path:
    return write_study(work, "res", study={"n_trials": n_trials}, fixed={**FIXED, **fixed})


def _search(work: Path, *args: str, env: dict | None = None):
    return spawn_cli(work, "search", "--study", work / "res.toml", "--no-retrain", *args, env=env)


def _study(work: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(work / "mlruns" / "res.journal")))
    return optuna.load_study(study_name="res", storage=storage)


def _running(work: Path) -> list[optuna.trial.FrozenTrial]:
    if not (work / "mlruns" / "res.journal").exists():
        return []
    try:
        return [t for t in _study(work).trials if t.state == TrialState.RUNNING]
    except KeyError:  # the study is not created yet
        return []


def _running_in(work: Path, proc) -> list[optuna.trial.FrozenTrial]:
    """The trials ``proc`` itself runs (a killed worker's trial stays RUNNING a while)."""
    return [t for t in _running(work) if t.system_attrs.get("worker", {}).get("pid") == proc.pid]


def _wait(condition, proc, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, (what, proc.communicate())
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _progress(trial: optuna.trial.FrozenTrial) -> tuple[int, int]:
    return tuple(trial.system_attrs.get(PROGRESS_ATTR, (0, 0)))


def _kill_9(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _reference(trial: optuna.trial.FrozenTrial):
    """The trial's config trained here, start to end, without interruption."""
    cfg = TrialConfig.from_flat(trial.user_attrs["config"])
    return validate(cfg, load_dataset(cfg, None))


def _assert_same_as_uninterrupted(trial: optuna.trial.FrozenTrial) -> None:
    reference = _reference(trial)
    curve = [s.val_acc for s in reference.folds[0].history]
    assert list(trial.intermediate_values.values()) == curve, trial.number
    assert trial.value == reference.mean_accuracy, trial.number
    assert trial.user_attrs["fold_values"] == reference.accuracies


def _assert_at_most_one_epoch_lost(study: optuna.Study) -> None:
    """Every trial lost or interrupted is continued by a retry that restored all its
    finished epochs but the last at most, or it had made no progress of its own."""
    trials = study.trials
    for lost in (t for t in trials if t.state == TrialState.FAIL):
        retries = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
        own = tuple(lost.system_attrs.get(RESUMED_AT_ATTR, (0, 0)))
        if not retries:
            assert _progress(lost) <= own, f"trial {lost.number}'s work was dropped"
            continue
        (retry,) = retries
        reported = len(lost.intermediate_values)
        assert retry.user_attrs["resumed_from_epoch"] >= reported - 1, (lost.number, reported)
        # (at least: a kill between a write and its record leaves the record one behind)
        assert tuple(retry.system_attrs[RESUMED_AT_ATTR]) >= _progress(lost)


def _assert_consistent(work: Path, study: optuna.Study, n_trials: int) -> None:
    assert len(finished(study)) == n_trials
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    runs = mlflow_trial_runs(work)
    assert all(r.info.status != "RUNNING" for v in runs.values() for r in v)
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            _assert_same_as_uninterrupted(trial)
        if "retry_of" in trial.user_attrs:
            (run,) = runs[trial.number]
            # a retry killed between its Optuna attribute and its MLflow tag lacks the tag;
            # it is FAIL then, and continued in turn by a retry that has both
            tag = run.data.tags.get("cifar_search.resumed_from_epoch")
            if tag is not None or trial.state != TrialState.FAIL:
                assert tag == str(trial.user_attrs["resumed_from_epoch"]), trial.number
            # the whole curve from epoch 1, the restored epochs' metrics copied with their steps
            client = mlflow.MlflowClient(env_for(work)["MLFLOW_TRACKING_URI"])
            history = client.get_metric_history(run.info.run_id, "val_acc")
            if trial.state == TrialState.COMPLETE:
                assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
            (lost_run,) = runs[trial.user_attrs["retry_of"]]
            assert lost_run.info.status == "FAILED"
            assert lost_run.data.tags["cifar_search.continued_by"] == str(trial.number)
    # the finished trials' checkpoints are gone
    assert not list((work / "mlruns" / "checkpoints" / "res").glob("trial-*/*.pt"))


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_at_most_one_epoch_per_kill(tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    print(f"random moments from seed {seed}")
    _study_file(tmp_path)
    kills, n_trials = 0, 3
    while kills < 6:
        proc = _search(tmp_path, "--n-trials", str(n_trials))
        trial = _wait(lambda p=proc: _running_in(tmp_path, p), proc, "a running trial")[0]
        if kills % 2 == 0:  # every other kill lands after a checkpoint, in the next epoch
            trial = _wait(
                lambda p=proc: [t for t in _running_in(tmp_path, p) if _progress(t)[0] >= 1],
                proc,
                "an epoch",
            )[0]
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # anywhere: before, during or after a checkpoint
            time.sleep(rng.uniform(0.0, 2.5))
        if proc.poll() is not None:  # the study finished first (a fast machine): more trials
            n_trials += 2
            continue
        _kill_9(proc)
        kills += 1
        print(f"kill {kills}: trial {trial.number}")
    rerun = _search(tmp_path, "--n-trials", str(n_trials))
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    _assert_consistent(tmp_path, study, n_trials)
    _assert_at_most_one_epoch_lost(study)
    assert any(t.user_attrs.get("resumed_from_epoch", 0) >= 1 for t in study.trials)


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_continues_from_the_previous_one(tmp_path):
    _study_file(tmp_path, n_trials=1)
    env = {**env_for(tmp_path), SLOW_WRITE_ENV: "0.05"}  # each write takes seconds
    proc = _search(tmp_path, env=env)
    folder = tmp_path / "mlruns" / "checkpoints" / "res" / "trial-0"
    # the second write of the trial: a previous checkpoint exists, the new one is half-made
    _wait(lambda: (folder / "fold0.pt").exists(), proc, "the first checkpoint")
    _wait(lambda: list(folder.glob(".fold0.pt.*.tmp")), proc, "the second write")
    time.sleep(0.3)
    _kill_9(proc)
    assert list(folder.glob(".fold0.pt.*.tmp")), "the kill missed the write"
    rerun = _search(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert "warning" not in err  # the half-written file was never read as a checkpoint
    _assert_consistent(tmp_path, study, 1)
    _assert_at_most_one_epoch_lost(study)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_and_sigusr1_mid_epoch_save_the_batch_and_lose_nothing(tmp_path, signum):
    _study_file(tmp_path, n_trials=2)
    proc = _search(tmp_path)
    _wait(lambda: [t for t in _running(tmp_path) if _progress(t)[0] >= 1], proc, "one epoch saved")
    time.sleep(0.2)  # into the next epoch
    proc.send_signal(signum)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent <= 10, "the worker took more than 10 s to stop"
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and f"interrupted ({signal.Signals(signum).name})" in err

    study = _study(tmp_path)
    (stopped,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs["fail_reason"] == f"interrupted ({signal.Signals(signum).name})"
    epochs, batches = _progress(stopped)
    assert batches > 0 or epochs > len(stopped.intermediate_values) - 1  # saved mid-epoch
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in waiting] == [stopped.number]
    assert stopped.user_attrs["node"] == socket.gethostname()  # where it ran, recorded
    (run,) = mlflow_trial_runs(tmp_path)[stopped.number]
    assert run.data.tags["cifar_search.node"] == socket.gethostname()
    with isolated(tmp_path):  # the studies command's rows, for the test's own study folder
        (row,) = study_rows(None, tmp_path)
    assert row[6] == f"1 (trial {stopped.number})", row  # waiting to continue

    rerun = _search(tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == stopped.number]
    # nothing lost: the retry starts at the very batch where the worker stopped
    assert tuple(retry.system_attrs[RESUMED_AT_ATTR]) == (epochs, batches)
    _assert_consistent(tmp_path, study, 2)


@pytest.mark.slow
def test_several_workers_with_kills_finish_exactly_and_identically(tmp_path):
    rng = random.Random(7)
    _study_file(tmp_path, n_trials=5)
    workers = [_search(tmp_path) for _ in range(3)]
    kills = 0
    for _ in range(2):
        victim = rng.randrange(len(workers))
        victim_proc = workers[victim]
        # a worker started late may find every trial taken and end: nothing to kill then
        _wait(
            lambda v=victim_proc: _running_in(tmp_path, v) or v.poll() is not None,
            victim_proc,
            "a running trial",
        )
        time.sleep(rng.uniform(0.5, 2.0))
        if workers[victim].poll() is None:
            _kill_9(workers[victim])
            kills += 1
        workers[victim] = _search(tmp_path)
    assert kills, "every victim ended before it could be killed"
    for proc in workers:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    study = _study(tmp_path)
    _assert_consistent(tmp_path, study, 5)
    _assert_at_most_one_epoch_lost(study)
    firsts = [
        tuple(sorted(t.params.items())) for t in finished(study) if "retry_of" not in t.user_attrs
    ]
    assert len(firsts) == len(set(firsts))


@pytest.mark.slow
def test_a_kfold_trial_killed_in_fold_2_keeps_fold_1(tmp_path):
    _study_file(tmp_path, n_trials=1, **{"data.kfold": 3, "optim.epochs": 2})
    proc = _search(tmp_path)
    folder = tmp_path / "mlruns" / "checkpoints" / "res" / "trial-0"
    _wait(lambda: (folder / "fold1.pt").exists(), proc, "fold 2's first checkpoint")
    _kill_9(proc)
    rerun = _search(tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _study(tmp_path)
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert retry.user_attrs["resumed_from_epoch"] >= 3  # fold 1's 2 epochs + fold 2's first
    assert "restored from checkpoint" in out
    _assert_same_as_uninterrupted(retry)


def _final_study(work: Path) -> Path:
    return write_study(
        work,
        "res",
        study={"n_trials": 1},
        fixed={**FIXED, "optim.epochs": 1},
        retrain={"epochs": 3, "seeds": [0, 1, 2]},
        ablation=[{"name": "narrow", "set": {"model.width": 0.125}}],
    )


@pytest.mark.slow
def test_a_retrain_killed_in_seed_2_of_3_keeps_seed_1_and_continues_seed_2(tmp_path):
    _final_study(tmp_path)
    assert _search(tmp_path).wait(timeout=300) == 0
    folder = tmp_path / "mlruns" / "checkpoints" / "res" / "final-trial-0"
    proc = spawn_cli(tmp_path, "retrain", "--study", tmp_path / "res.toml")
    _wait(lambda: (folder / "seed1.pt").exists(), proc, "seed 1's first checkpoint")
    _kill_9(proc)
    rerun = spawn_cli(tmp_path, "retrain", "--study", tmp_path / "res.toml")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    # seed 0 is evaluated again, not trained: all its epochs come from the checkpoint
    assert out.count("seed 0 epoch") == 3
    assert all("restored" in line for line in out.splitlines() if "seed 0 epoch" in line)
    seed1 = [line for line in out.splitlines() if "seed 1 epoch" in line]
    assert "restored" in seed1[0] and "restored" not in seed1[-1]
    assert not any("restored" in line for line in out.splitlines() if "seed 2 epoch" in line)
    assert not folder.exists()  # deleted once the run is FINISHED

    client = mlflow.MlflowClient(env_for(tmp_path)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("res")
    final_runs = client.search_runs(
        [experiment.experiment_id], "tags.`cifar_search.kind` = 'final'"
    )
    done = [r for r in final_runs if r.info.status == "FINISHED"]
    assert len(done) == 1 and len(final_runs) == 2
    assert done[0].data.tags["cifar_search.resumed_from_epoch"].startswith("seed0=3,seed1=")
    # each seed's test result equals the same seed trained without interruption
    trial = _study(tmp_path).trials[0]
    base = TrialConfig.from_flat(trial.user_attrs["config"]).with_overrides({"optim.epochs": 3})
    dataset = load_dataset(base, None)
    for seed in (0, 1, 2):
        reference = final_run(base.with_overrides({"runtime.seed": seed}), dataset)
        assert done[0].data.metrics[f"seed{seed}.test_accuracy"] == reference.final.accuracy
        assert done[0].data.metrics[f"seed{seed}.test_loss"] == reference.final.loss

    # the study's final retrain is done: search again does not retrain it
    again = spawn_cli(tmp_path, "search", "--study", tmp_path / "res.toml")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "final retrain already done" in out and done[0].info.run_id in out
    assert (
        len(client.search_runs([experiment.experiment_id], "tags.`cifar_search.kind` = 'final'"))
        == 2
    )


@pytest.mark.slow
def test_an_ablation_killed_in_a_variant_continues_it(tmp_path):
    _final_study(tmp_path)
    folder = tmp_path / "mlruns" / "checkpoints" / "res" / "ablation"
    args = ("ablate", "--study", tmp_path / "res.toml", "--base", "fixed", "--seeds", "0")
    proc = spawn_cli(tmp_path, *args)
    first = _wait(lambda: list(folder.glob("*.pt")), proc, "the baseline's checkpoint")
    _wait(
        lambda: [p for p in folder.glob("[!.]*.pt") if p not in first and "prev" not in p.name],
        proc,
        "the variant's checkpoint",
    )
    _kill_9(proc)
    rerun = spawn_cli(tmp_path, *args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    client = mlflow.MlflowClient(env_for(tmp_path)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("res")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`cifar_search.kind` = 'ablation_run' and attributes.status = 'FINISHED'",
    )
    by_variant = {r.data.tags["cifar_search.variant"]: r for r in runs}
    assert sorted(by_variant) == ["baseline", "narrow"]  # the baseline reused, not retrained
    assert int(by_variant["narrow"].data.tags["cifar_search.resumed_from_epoch"]) >= 1
    spec_cfg = config_of(by_variant["narrow"])
    reference = final_run(spec_cfg, load_dataset(spec_cfg, None))
    assert by_variant["narrow"].data.metrics["accuracy"] == reference.final.accuracy
    assert not list(folder.glob("*.pt"))


@pytest.mark.slow
def test_train_out_stopped_by_sigterm_continues_to_the_same_model(tmp_path):
    import torch

    args = [
        "train", "--dataset", "synthetic", "--model", "improved_cnn", "--device", "cpu",
        "--set", "model.width=0.25", "--set", "data.synthetic_size=1000",
        "--set", "optim.epochs=3", "--set", "aug.preset=full", "--test",
    ]  # fmt: skip
    reference = spawn_cli(tmp_path, *args, "--out", tmp_path / "reference")
    assert reference.wait(timeout=300) == 0
    proc = spawn_cli(tmp_path, *args, "--out", tmp_path / "run")
    proc.wait_for_output("epoch 1/3")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err, err
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists()
    rerun = spawn_cli(tmp_path, *args, "--out", tmp_path / "run")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "continuing from" in out and "restored from checkpoint" in out
    a = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _pruning_study(work: Path, monkeypatch) -> None:
    """Trial 0 learns, trial 1 (a learning rate far too small) is pruned by the median
    pruner once warm-up is over: the decision a continued trial must make again."""
    from search.engine import open_study
    from search.study import load_study

    write_study(
        work,
        "res",
        study={
            "n_trials": 2,
            "pruner": "median",
            "pruner_args": {"n_startup_trials": 1, "n_warmup_steps": 2},
        },
        space={"optim.lr": {"type": "float", "low": 1e-6, "high": 0.2, "log": True}},
        fixed=FIXED,
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("CIFAR_SEARCH_HOME", str(work))  # its mlruns/ there
    study = open_study(load_study(str(work / "res.toml")), None)
    study.enqueue_trial({"optim.lr": 0.1})
    study.enqueue_trial({"optim.lr": 1e-6})


@pytest.mark.slow
def test_a_continued_trial_is_pruned_where_the_uninterrupted_one_was(tmp_path, monkeypatch):
    reference_dir, work = tmp_path / "reference", tmp_path / "work"
    _pruning_study(reference_dir, monkeypatch)
    assert _search(reference_dir).wait(timeout=300) == 0
    reference = _study(reference_dir).trials[1]
    assert reference.state == TrialState.PRUNED  # the setting prunes it, uninterrupted

    _pruning_study(work, monkeypatch)
    proc = _search(work)
    _wait(
        lambda: [t for t in _running(work) if t.number == 1 and _progress(t)[0] >= 1],
        proc,
        "trial 1's first checkpoint",
    )
    _kill_9(proc)
    rerun = _search(work)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    (retry,) = [t for t in _study(work).trials if t.user_attrs.get("retry_of") == 1]
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert retry.state == TrialState.PRUNED
    assert retry.intermediate_values == reference.intermediate_values
