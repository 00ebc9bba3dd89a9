"""Deciding to continue: which checkpoint a training run starts from, what a retry takes
over from the trial it continues, and when checkpoints are deleted.

- Every training run the tool starts (a fold of a search trial, a seed of the final
  retrain, an ablation run, ``train --out``) gets a ``Checkpoint`` (``search.store``) tied
  to it by a hash of its config, device and split, and starts from it when one is there.
- A trial lost (kill -9, a dead machine) or interrupted (a signal) is retried with its
  parameters (``coordination.retry_lost_trial``). The retry takes over the lost trial's
  checkpoint folder, reports the restored epochs to Optuna and MLflow first (the training
  loop replays them through the same callback), and records ``resumed_from_epoch``. A
  retry lost in turn is continued again only if it made progress (``PROGRESS_ATTR`` moved
  past ``RESUMED_AT_ATTR``): no crash loops.
- A finished run's checkpoints are deleted unless ``runtime.keep_checkpoints``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.config import TrialConfig
from search.engine.coordination import PROGRESS_ATTR, RESUMED_AT_ATTR, RETRY_ATTR
from search.interrupts import stop_requested
from search.store import Tracker
from search.store.checkpoints import Checkpoint, remove_folder, run_hash
from search.store.locations import fold_checkpoint, train_checkpoint, trial_checkpoints
from search.training import Checkpointing, position_of, resolve_device
from search.training.run_state import STATE_FORMAT

RESUMED_ATTR = "resumed_from_epoch"  # user attr of a retry: epochs restored (0 = started over)
RESUMED_TAG = "cifar_search.resumed_from_epoch"  # the same on the run's MLflow run
CONTINUED_BY_TAG = "cifar_search.continued_by"  # on a lost trial's run: the trial continuing it


def run_identity(cfg: TrialConfig, **identity: object) -> str:
    """The hash that ties a checkpoint to one run: its config, the device type it trains on
    (a CPU generator's state cannot seed a GPU's), the state's format and ``identity``."""
    device = resolve_device(cfg.runtime.device).type
    return run_hash(cfg, device=device, state_format=STATE_FORMAT, **identity)


@dataclass
class ResumableRun:
    """One training run's checkpoint and how ``train_one`` uses it."""

    checkpoint: Checkpoint | None
    checkpointing: Checkpointing
    restored_epochs: int  # epochs the start state holds (0: starts at epoch 1)

    def finished(self, keep: bool) -> None:
        """The run's result is stored: its checkpoint is no longer needed."""
        if self.checkpoint is not None and not keep:
            self.checkpoint.remove()
            _remove_if_empty(self.checkpoint.path.parent)


def resumable(path: Path | None, cfg: TrialConfig, **identity: object) -> ResumableRun:
    """The run checkpointed at ``path`` (None, or ``runtime.checkpoint_every = 0``: no
    checkpoints), started from the state found there."""
    if path is None or cfg.runtime.checkpoint_every == 0:
        return ResumableRun(None, Checkpointing(stop_requested=stop_requested), 0)
    checkpoint = Checkpoint(path, run_identity(cfg, **identity))
    start = checkpoint.load()

    def bad_start(error: Exception) -> None:
        text = str(error).splitlines()[0][:160] if str(error) else ""
        warnings.warn(
            f"checkpoint {path}: cannot be restored ({type(error).__name__}: {text}); "
            f"starting from epoch 1",
            stacklevel=2,
        )

    checkpointing = Checkpointing(
        start, checkpoint.save, cfg.runtime.checkpoint_every, stop_requested, bad_start
    )
    return ResumableRun(checkpoint, checkpointing, 0 if start is None else position_of(start)[0])


class OutFolderCheckpoints:
    """``train --out DIR``: the run (``--test``, ``fold=None``) or each fold checkpointed in
    ``DIR/checkpoints/`` and continued when the same command runs again; nothing without
    ``out``. ``on_resume(line)`` is told of each run that continues."""

    def __init__(self, cfg: TrialConfig, out: str | None, on_resume: Callable[[str], None]) -> None:
        self.cfg, self.out, self.on_resume = cfg, out, on_resume
        self.runs: list[ResumableRun] = []

    def __call__(self, fold: int | None) -> Checkpointing:
        path = train_checkpoint(self.out, fold) if self.out else None
        run = resumable(path, self.cfg, fold=fold, split="test" if fold is None else "val")
        self.runs.append(run)
        if run.checkpoint is not None and run.restored_epochs:
            self.on_resume(
                f"continuing from {run.checkpoint.path}: {run.restored_epochs} epochs restored"
            )
        return run.checkpointing

    def finished(self) -> None:
        """The outputs are written: the checkpoints go unless ``runtime.keep_checkpoints``."""
        for run in self.runs:
            run.finished(self.cfg.runtime.keep_checkpoints)


class TrialCheckpoints:
    """The checkpoints of one search trial, one file per fold in the trial's folder. A
    retry first takes over the folder of the trial it continues (a rename: nothing is
    copied), so that a chain of retries carries the work along."""

    def __init__(
        self, root: Path, study: optuna.Study, trial: optuna.Trial, cfg: TrialConfig
    ) -> None:
        self.study, self.trial_id = study, trial._trial_id
        self.folder = trial_checkpoints(root, trial.number)
        self.keep = cfg.runtime.keep_checkpoints
        lost = _lost_folder(root, study, trial.user_attrs.get(RETRY_ATTR))
        if lost is not None and not self.folder.exists():
            os.replace(lost, self.folder)
        n_folds = max(1, cfg.data.kfold)
        self.runs = [
            resumable(fold_checkpoint(self.folder, f), cfg, fold=f, folds=n_folds)
            for f in range(n_folds)
        ]
        self.positions = [_start_position(r) for r in self.runs]
        for f, run in enumerate(self.runs):
            if run.checkpoint is not None:
                run.checkpointing.save = self._saver(f, run.checkpoint)
        self.restored_epochs = sum(r.restored_epochs for r in self.runs)
        self._record(RESUMED_AT_ATTR)
        self._record(PROGRESS_ATTR)

    def fold(self, fold: int) -> Checkpointing:
        """``protocols.validate``'s per-fold checkpointing."""
        checkpointing = self.runs[fold].checkpointing
        start, checkpointing.start = checkpointing.start, None  # free it once handed over
        return dataclasses.replace(checkpointing, start=start)

    def _saver(self, fold: int, checkpoint: Checkpoint):
        def save(state: dict) -> None:
            checkpoint.save(state)
            self.positions[fold] = position_of(state)
            self._record(PROGRESS_ATTR)

        return save

    def _record(self, attr: str) -> None:
        """The trial's progress in the storage ([trial-epochs, batches] in checkpoints), so
        that whoever finds the trial lost can tell whether it moved (any machine)."""
        progress = [sum(p[0] for p in self.positions), sum(p[1] for p in self.positions)]
        try:
            self.study._storage.set_trial_system_attr(self.trial_id, attr, progress)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # judged lost by another worker meanwhile: its retry takes the checkpoint

    def finished(self, stored: bool) -> None:
        """The trial is over: ``stored`` once Optuna has stored its COMPLETE or PRUNED state,
        else it failed and nobody retries it. A failed trial no longer RUNNING in the
        storage was judged lost meanwhile by another worker, whose retry is about to take
        the folder over: it stays."""
        if self.keep:
            return
        if stored or self.study._storage.get_trial(self.trial_id).state == TrialState.RUNNING:
            remove_folder(self.folder)


def _lost_folder(root: Path, study: optuna.Study, number: int | None) -> Path | None:
    """The checkpoint folder a retry of trial ``number`` continues: that trial's, or, when
    that trial was itself a retry that died before taking its folder over, the folder of
    the trial it continued, and so on up the chain."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    seen = set()
    while number is not None and number not in seen:
        seen.add(number)
        folder = trial_checkpoints(root, int(number))
        if folder.is_dir():
            return folder
        number = by_number[number].user_attrs.get(RETRY_ATTR) if number in by_number else None
    return None


def _start_position(run: ResumableRun) -> tuple[int, int]:
    start = run.checkpointing.start
    return (0, 0) if start is None else position_of(start)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def mark_continuation(study: optuna.Study, tracker: Tracker, trial: optuna.Trial) -> None:
    """A retry's lost trial keeps its FAILED run, tagged with the trial continuing it."""
    lost_number = trial.user_attrs.get(RETRY_ATTR)
    if lost_number is None:
        return
    for t in study.get_trials(deepcopy=False):
        if t.number == lost_number and "mlflow_run_id" in t.user_attrs:
            tracker.set_tags(t.user_attrs["mlflow_run_id"], {CONTINUED_BY_TAG: trial.number})


def sweep_trial_folders(study: optuna.Study, root: Path, keep: bool) -> None:
    """Once the study has its target: delete the checkpoint folders no running trial will
    continue (those of finished trials, of lost ones whose retry got nowhere, and of lost
    ones whose retry waits but will not run since the target is reached). Called under the
    claim lock; ``keep`` (``runtime.keep_checkpoints``) keeps every folder."""
    if keep or not root.is_dir():
        return
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    alive = {t.number for t in running}
    continued = {t.user_attrs.get(RETRY_ATTR) for t in running}
    for folder in root.glob("trial-*"):
        number = folder.name.removeprefix("trial-")
        if number.isdigit() and int(number) not in alive and int(number) not in continued:
            remove_folder(folder)
