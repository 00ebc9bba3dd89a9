"""Plain-text tables and lines for the terminal (no click here, so the engine can reuse it);
those of ``cli.py bench`` and ``cli.py check-fast-path`` are in ``perf_text``.

Light on purpose: ``table`` serves ``cli.py keys`` and ``cli.py studies``, which must not
import torch, so the training and store types are imported for annotations only or
inside the functions that need them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from search.reporting.text import metric_text, pct, table

_IMPORTED = time.monotonic()  # process_age's fallback where /proc is missing

if TYPE_CHECKING:
    import optuna

    from search.config import TrialConfig
    from search.engine.loop import SearchOutcome, TrialEvent
    from search.engine.objective import EpochEvent
    from search.engine.workers import WorkersFailed
    from search.study import StudySpec
    from search.training import (
        Dataset,
        EpochStats,
        EvalReport,
        TrainResult,
        ValidationResult,
    )


def epoch_line(stats: EpochStats, epochs: int, prefix: str = "") -> str:
    parts = [
        f"{prefix}epoch {stats.epoch:>{len(str(epochs))}}/{epochs}",
        f"loss {stats.train_loss:.4f}",
        f"acc {pct(stats.train_acc)}",
    ]
    if stats.val_acc is not None:
        parts += [
            f"val_loss {stats.val_loss:.4f}",
            f"val_acc {pct(stats.val_acc)}",
            f"val_top5 {pct(stats.val_top5)}",
        ]
    parts += [f"lr {stats.lr:.4g}", f"{stats.seconds:.1f}s", f"{stats.images_per_s:,.0f} img/s"]
    return "  ".join(parts) + (RESTORED if stats.restored else "")


RESTORED = "  (restored from checkpoint)"


CONTINUE = "rerun the same command to continue from the last checkpoint"


def interrupted_line(then: str | None = None) -> str:
    """After a signal stopped a command (on stderr): which signal, and what ``then``
    (default: rerun to continue from the checkpoint)."""
    from search.interrupts import signal_name

    return f"interrupted ({signal_name()}): {then or CONTINUE}"


def model_table() -> str:
    """``cli.py models``: every model with its family, parameters and knobs."""
    import torch

    import cifar_models

    def count(name: str, num_classes: int) -> int:
        with torch.device("meta"):  # shapes only: counts resnet152 without allocating it
            return cifar_models.count_parameters(cifar_models.create(name, num_classes))

    rows = []
    for name in cifar_models.list_models():
        p10, p100 = count(name, 10), count(name, 100)
        rows.append(
            (
                name,
                cifar_models.model_family(name),
                f"{p10:,}",
                f"{p100:,}",
                ", ".join(cifar_models.model_knobs(name)),
            )
        )
    return (
        table(["model", "family", "params (10)", "params (100)", "knobs"], rows, align="llrrl")
        + "\n\nalso: timm:<name> builds any timm model (pip install -e '.[timm]')"
    )


def train_header(cfg: TrialConfig) -> str:
    """The recipe of one training run, before its epochs."""
    return (
        f"{cfg.model.name} on {cfg.data.dataset}: {cfg.optim.epochs} epochs, "
        f"{cfg.optim.name} lr {cfg.optim.lr:g}, batch {cfg.optim.batch_size}, "
        f"aug {cfg.aug.preset}, seed {cfg.runtime.seed}"
    )


def folds_line(folds: ValidationResult) -> str:
    return (
        f"{len(folds.folds)}-fold validation accuracy {pct(folds.mean_accuracy)} "
        f"± {pct(folds.std_accuracy)} (std over folds)"
    )


def per_class_table(report: EvalReport, classes: Sequence[str], columns: int = 4) -> str:
    """Per-class accuracy, several classes per row so CIFAR-100 stays readable."""
    entries = [
        f"{name[:14]:<14} {100 * acc:6.2f}%"
        for name, acc in zip(classes, report.per_class_accuracy)
    ]
    rows = [entries[i : i + columns] for i in range(0, len(entries), columns)]
    return "\n".join("   ".join(r) for r in rows)


def summary(result: TrainResult, classes: Sequence[str]) -> str:
    f = result.final
    split = {"val": "validation", "test": "test"}[f.split]
    lines = [
        f"per-class {split} accuracy:",
        per_class_table(f, classes),
        "",
        f"{split} accuracy {pct(f.accuracy)}   top-5 {pct(f.top5)}   loss {f.loss:.4f}   "
        f"({f.n_images:,} images)",
        f"macro precision {f.precision_macro:.4f}   recall {f.recall_macro:.4f}   "
        f"F1 {f.f1_macro:.4f}",
        f"model {result.config.model.name}: {result.n_params:,} parameters   "
        f"train {result.train_seconds:.1f}s on {result.device}   "
        f"inference {f.inference_ms_per_image:.3f} ms/image   "
        f"peak memory {result.peak_memory_mb:,.0f} MB",
    ]
    if result.stop_reason:
        lines.append(result.stop_reason)
    return "\n".join(lines)


def keys_table() -> str:
    """``cli.py keys``: every config key with its default and meaning."""
    from search.config import describe_keys

    return table(["key", "default", "meaning"], describe_keys(), align="lll")


def dataset_report(
    name: str, data_dir: str | None, val_fraction: float, grid: str | Path | None = None
) -> str:
    """``cli.py data``: the dataset as the tool loads it (split sizes, channel statistics,
    images per class), and with ``grid`` a PNG of sample images per class."""
    import numpy as np

    from search.config import TrialConfig
    from search.training.datasets import load
    from search.training.splits import holdout_split

    cfg = TrialConfig().with_overrides({"data.dataset": name, "data.val_fraction": val_fraction})
    ds = load(cfg.data.dataset, data_dir)
    train_idx, val_idx = holdout_split(ds.train_y, val_fraction, 0)
    mean, std = ds.mean_std
    train = np.bincount(ds.train_y, minlength=ds.num_classes)
    test = np.bincount(ds.test_y, minlength=ds.num_classes)
    lines = [
        f"dataset {ds.name}: {ds.num_classes} classes, images {tuple(ds.train_x.shape[1:])} uint8",
        f"training split {len(ds.train_y):,} images -> train {len(train_idx):,} + validation "
        f"{len(val_idx):,} (val_fraction {val_fraction}); test split {len(ds.test_y):,} images "
        f"(read only by final evaluations)",
        "channel mean (R, G, B) "
        + ", ".join(f"{m:.4f}" for m in mean)
        + "   std "
        + ", ".join(f"{s:.4f}" for s in std)
        + "   (training split, 0..1 scale)",
        table(
            ["label", "class", "train", "test"],
            [(i, name, train[i], test[i]) for i, name in enumerate(ds.classes)],
            align="rlrr",
        ),
    ]
    if grid:
        from search.reporting.figures import sample_grid

        lines.append(f"wrote {sample_grid(ds.train_x, ds.train_y, ds.classes, Path(grid))}")
    return "\n".join(lines)


# search ----------------------------------------------------------------------------------
def print_line(line: str, err: bool = False) -> None:
    print(line, file=sys.stderr if err else sys.stdout)


class SearchProgress:
    """What ``cli.py search`` prints while a study runs: one line per epoch and per trial,
    prefixed with ``[worker N]`` in worker ``N`` of ``--workers``. ``echo(line, err=False)``
    prints a line (``click.echo`` in the CLI)."""

    def __init__(
        self, spec: StudySpec, worker: str | None = None, echo: Callable[..., None] = print_line
    ) -> None:
        self.spec, self.worker, self.echo = spec, worker, echo
        self.prefix = "" if worker is None else f"[worker {worker}] "

    def started(self, target: int, storage_url: str | None) -> None:
        from search.store import home, storage_label

        s = self.spec
        self.echo(
            f"{self.prefix}study {s.name}: {s.dataset}, {s.sampler} sampler, {s.pruner} "
            f"pruner, target {target} trials; storage {storage_label(s.name, storage_url)}"
            + ("" if self.prefix else f"; home {home()}")
        )

    def workers_started(self, n: int, gpus: Sequence[str] | None) -> None:
        on_gpus = f" (GPUs {', '.join(gpus)}, {n // len(gpus)} per GPU)" if gpus else ""
        self.echo(f"starting {n} workers on study {self.spec.name}{on_gpus}")

    def epoch(self, e: EpochEvent) -> None:
        fold = f" fold {e.fold + 1}/{e.folds}" if e.folds > 1 else ""
        value = metric_text(e.metric, getattr(e.stats, e.metric))
        self.echo(
            f"{self.prefix}  trial {e.trial}{fold} epoch {e.stats.epoch}/{e.epochs}  "
            f"loss {e.stats.train_loss:.4f}  {e.metric} {value}"
            f"{'' if self.spec.multi_objective else f'  best {metric_text(e.metric, e.best)}'}"
            f"  {e.stats.seconds:.1f}s{RESTORED if e.stats.restored else ''}"
        )

    def trial(self, e: TrialEvent) -> None:
        from search.reporting.pareto import values_text

        metric, c = self.spec.metric, e.counts
        complete = (
            values_text(list(e.values), list(e.values.values()))
            if e.values and self.spec.multi_objective
            else f"{metric} {metric_text(metric, e.value)}"
        )
        what = {
            "COMPLETE": f"complete, {complete}",
            "PRUNED": "pruned",
            "FAIL": f"FAILED ({e.reason})",
        }.get(e.state, e.state)
        retry = f" (retry of {e.retry_of})" if e.retry_of is not None else ""
        warm = f" (warm start from {e.warm_start_from})" if e.warm_start_from else ""
        best = (
            f"Pareto front {e.front or 0} trial(s)"
            if self.spec.multi_objective
            else f"best {metric_text(metric, e.best)}"
        )
        self.echo(
            f"{self.prefix}trial {e.trial}{retry}{warm} {what}   {best}   "
            f"[{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed]"
        )

    def warning(self, line: str) -> None:
        self.echo(f"{self.prefix}{line}", err=True)

    def waiting(self, running: int) -> None:
        self.echo(
            f"{self.prefix}waiting for {running} running trial(s) of other workers: the "
            f"target is reached if they finish"
        )

    def workers_failed(self, failed: WorkersFailed) -> None:
        """A worker of ``--workers`` failed; one that was interrupted has said so itself."""
        if not failed.interrupted:
            self.echo(f"error: {failed}", err=True)

    def interrupted(self, workers: bool = False) -> None:
        """After Ctrl-C, SIGTERM or SIGUSR1, on stderr; ``workers``: in the parent of
        ``--workers``."""
        from search.interrupts import signal_name

        what = "the workers' running trials" if workers else "a running trial"
        self.echo(
            f"{self.prefix}interrupted ({signal_name()}): rerun the same command to continue "
            f"({what} ended FAIL and continues from its checkpoint)",
            err=True,
        )

    def finished(self, outcome: SearchOutcome) -> None:
        if outcome.ran == 0:
            self.echo(
                f"{self.prefix}nothing to do: the study has its {outcome.target} finished "
                f"trials (raise --n-trials to run more)"
            )
        elif not self.prefix:
            self.echo(time_line(outcome))


def time_line(outcome: SearchOutcome) -> str:
    """Where the command's time went: before the first trial (imports, data, stores), the
    trials, and the end of the study (its figures)."""
    now = time.monotonic()
    started = now - process_age()
    first = outcome.first_trial_at or outcome.trials_ended_at
    parts = (
        ("before the first trial", first - started),
        ("trials", outcome.trials_ended_at - first),
        ("end of study", outcome.ended_at - outcome.trials_ended_at),
    )
    spent = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in parts)
    return f"time: {outcome.ended_at - started:.1f}s ({spent})"


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included), from
    Linux's /proc; elsewhere, since this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def studies_table(storage_url: str | None = None, checkpoint_dir: str | None = None) -> str:
    """``cli.py studies``: every study file with its progress (see ``exports.study_rows``)."""
    from search.reporting.exports import study_rows
    from search.store import HOME_ENV, home

    where = f"home {home()} (run state in its mlruns/; {HOME_ENV} sets another)\n"
    return where + table(
        [
            "study",
            "dataset",
            "sampler",
            "space",
            "done/target",
            "best",
            "to continue",
            "checkpoints",
            "file",
        ],
        study_rows(storage_url, checkpoint_dir=checkpoint_dir),
        align="llllrrlrl",
    )


def study_summary(spec: StudySpec, study: optuna.Study) -> str:
    """Trial counts, the best trial's parameters and the top 5 trials."""
    from search.store import state_counts

    counts = state_counts(study)
    lines = [
        f"\nstudy {spec.name}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed"
    ]
    complete = [t for t in study.trials if t.values is not None]
    if not complete:
        return "\n".join(lines + ["no COMPLETE trial yet"])
    if spec.multi_objective:
        from search.reporting.pareto import front_summary

        return "\n".join(lines + front_summary(spec, [(t.number, t.values) for t in complete]))
    top = sorted(complete, key=lambda t: t.value, reverse=spec.direction == "maximize")[:5]
    best = top[0]
    lines.append(f"best trial {best.number}: {spec.metric} {metric_text(spec.metric, best.value)}")
    lines += [f"  {k} = {v}" for k, v in best.params.items()]
    keys = sorted({k for t in top for k in t.params})
    rows = [
        [t.number, metric_text(spec.metric, t.value)] + [t.params.get(k, "-") for k in keys]
        for t in top
    ]
    rows = [[f"{c:.4g}" if isinstance(c, float) else c for c in r] for r in rows]
    lines += ["top trials:", table(["trial", spec.metric, *keys], rows)]
    return "\n".join(lines)


def error_summary(result: TrainResult, dataset: Dataset, which: str = "") -> list[str]:
    """A few lines on where a final model fails: calibration and the most confused pairs."""
    from search.reporting.error_report import test_analysis

    analysis = test_analysis(result, dataset)
    if analysis is None:
        return []
    from search.reporting.error_analysis import error_lines

    return [f"error analysis{which}:"] + [f"  {line}" for line in error_lines(analysis)]
