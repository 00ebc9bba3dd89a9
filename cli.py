#!/usr/bin/env python
"""Command line: parse, call ``search.*``, format. Run ``python cli.py --help``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from search.errors import ConfigError


class _Commands(click.Group):
    """Turns user errors into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Hyperparameter and ablation search for CIFAR-10/100 classifiers (Optuna + MLflow).

    Start with `models` and `data`, train one config with `train`, then search.
    """
    import warnings

    # one line per warning, like our errors, instead of Python's two-line format
    warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
        f"warning: {message}", err=True)


DATA_DIR_HELP = "folder holding cifar-10-batches-py/ or cifar-100-python/ (default $CIFAR_DATA_DIR or ./data)"
SET_HELP = "override a config key, e.g. --set optim.lr=0.05 (repeatable; keys: `cli.py keys`)"


@main.command()
def models() -> None:
    """List every model: name, family, knobs and parameters for 10 and 100 classes."""
    import torch

    import cifar_models
    from search.reporting import table

    def count(name: str, num_classes: int) -> int:
        with torch.device("meta"):  # shapes only: counts resnet152 without allocating it
            return cifar_models.count_parameters(cifar_models.create(name, num_classes))

    rows = []
    for name in cifar_models.list_models():
        p10, p100 = count(name, 10), count(name, 100)
        rows.append((name, cifar_models.model_family(name), f"{p10:,}", f"{p100:,}",
                     ", ".join(cifar_models.model_knobs(name))))
    click.echo(table(["model", "family", "params (10)", "params (100)", "knobs"], rows,
                     align="llrrl"))
    click.echo("\nalso: timm:<name> builds any timm model (pip install -e '.[timm]')")


@main.command()
def keys() -> None:
    """List every config key with its default and meaning (for --set and config files)."""
    from search.config import describe_keys
    from search.reporting import table

    click.echo(table(["key", "default", "meaning"], describe_keys(), align="lll"))


@main.command()
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10, cifar100, digits or synthetic")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="share of the training split held out for validation")
@click.option("--grid", type=click.Path(dir_okay=False), help="write a PNG of sample images per class")
def data(dataset: str, data_dir: str | None, val_fraction: float, grid: str | None) -> None:
    """Show a dataset as the tool loads it: splits, images per class, channel mean/std."""
    import numpy as np

    from search.training import datasets as data_mod
    from search.config import TrialConfig
    from search.reporting import table

    cfg = TrialConfig().with_overrides({"data.dataset": dataset, "data.val_fraction": val_fraction})
    ds = data_mod.load(cfg.data.dataset, data_dir)
    train_idx, val_idx = data_mod.holdout_split(ds.train_y, val_fraction, 0)
    mean, std = ds.mean_std
    click.echo(f"dataset {ds.name}: {ds.num_classes} classes, images {tuple(ds.train_x.shape[1:])} uint8")
    click.echo(f"training split {len(ds.train_y):,} images -> train {len(train_idx):,} + "
               f"validation {len(val_idx):,} (val_fraction {val_fraction}); "
               f"test split {len(ds.test_y):,} images (read only by final evaluations)")
    click.echo("channel mean (R, G, B) " + ", ".join(f"{m:.4f}" for m in mean)
               + "   std " + ", ".join(f"{s:.4f}" for s in std) + "   (training split, 0..1 scale)")
    counts_train = np.bincount(ds.train_y, minlength=ds.num_classes)
    counts_test = np.bincount(ds.test_y, minlength=ds.num_classes)
    rows = [(i, name, counts_train[i], counts_test[i]) for i, name in enumerate(ds.classes)]
    click.echo(table(["label", "class", "train", "test"], rows, align="rlrr"))
    if grid:
        from search.reporting import sample_grid

        path = sample_grid(ds.train_x, ds.train_y, ds.classes, Path(grid))
        click.echo(f"wrote {path}")


@main.command()
@click.option("--model", help="model name (see `cli.py models`); same as --set model.name=...")
@click.option("--dataset", help="cifar10, cifar100, digits or synthetic; same as --set data.dataset=...")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML config (e.g. from `cli.py best`); --model/--dataset/--set override it")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--seed", type=int, help="training seed (runtime.seed)")
@click.option("--device", help="auto, cpu, cuda, cuda:N (runtime.device)")
@click.option("--test", is_flag=True,
              help="train on train+validation and evaluate once on the test split")
@click.option("--out", type=click.Path(file_okay=False),
              help="write metrics.json, config.toml and model.pt (state_dict) here")
def train(model: str | None, dataset: str | None, data_dir: str | None, config_file: str | None,
          assignments: tuple[str, ...], seed: int | None, device: str | None, test: bool,
          out: str | None) -> None:
    """Train one config (like the old train.py) and print per-epoch lines and a summary.

    Without --test the run is evaluated on the validation split (every fold with
    data.kfold); with --test it trains on the whole training split and is evaluated
    once on the test split.
    """
    from search.training import protocols as run
    from search.config import TrialConfig, parse_assignments
    from search.reporting import epoch_line, pct, summary

    cfg = TrialConfig.from_file(config_file) if config_file else TrialConfig()
    overrides = {"model.name": model, "data.dataset": dataset, "runtime.seed": seed,
                 "runtime.device": device}
    cfg = cfg.with_overrides({k: v for k, v in overrides.items() if v is not None})
    cfg = cfg.with_overrides(parse_assignments(assignments))
    dataset_ = run.load_dataset(cfg, data_dir)
    click.echo(f"{cfg.model.name} on {cfg.data.dataset}: {cfg.optim.epochs} epochs, "
               f"{cfg.optim.name} lr {cfg.optim.lr:g}, batch {cfg.optim.batch_size}, "
               f"aug {cfg.aug.preset}, seed {cfg.runtime.seed}")
    epochs = cfg.optim.epochs
    if test:
        result = run.final_run(cfg, dataset_, lambda s: click.echo(epoch_line(s, epochs)))
        results = [result]
    else:
        folds = run.validate(cfg, dataset_, lambda f, s: click.echo(
            epoch_line(s, epochs, f"fold {f} " if cfg.data.kfold >= 2 else "")))
        results = folds.folds
        if len(results) > 1:
            click.echo(f"{len(results)}-fold validation accuracy {pct(folds.mean_accuracy)} "
                       f"± {pct(folds.std_accuracy)} (std over folds)")
        result = results[-1]
    click.echo(summary(result, dataset_.classes))
    if out:
        _write_outputs(Path(out), cfg, results)


STUDY_HELP = "study name (a file in studies/) or path to a study TOML file"
STORAGE_HELP = ("Optuna storage URL (sqlite:///..., postgresql://user:pass@host/db); "
                "default: a journal file mlruns/<study>.journal")


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--n-trials", type=click.IntRange(min=1),
              help="target number of COMPLETE+PRUNED trials (default: the study file's)")
@click.option("--timeout", type=click.FloatRange(min=0), help="stop starting trials after this many seconds")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--device", help="auto, cpu, cuda, cuda:N (runtime.device)")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="fix a config key that is not searched, e.g. --set optim.epochs=10")
@click.option("--no-retrain", is_flag=True, help="skip the final retrain of the best trial")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes on this machine sharing the study")
@click.option("--gpus", help="comma-separated GPU ids: --trials-per-gpu workers pinned to each "
                             "through CUDA_VISIBLE_DEVICES (replaces --workers)")
@click.option("--trials-per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
              help="concurrent trials on each GPU of --gpus")
@click.option("--max-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="stop the study after this many failed trials in a row")
@click.option("--heartbeat", type=click.FloatRange(min=1), default=20, show_default=True,
              help="seconds between a running trial's heartbeats; a trial silent for 3 of "
                   "them (or whose process is gone, on this host) is marked FAIL and retried once")
def search(study_name: str, n_trials: int | None, timeout: float | None, data_dir: str | None,
           device: str | None, storage: str | None, assignments: tuple[str, ...],
           no_retrain: bool, workers: int, gpus: str | None, trials_per_gpu: int,
           max_failures: int, heartbeat: float) -> None:
    """Run (or continue) a study: Optuna samples configs, prunes on validation accuracy,
    logs every trial to MLflow, then retrains the best trial and tests it once.

    Rerunning the same command continues the study up to its n_trials (COMPLETE +
    PRUNED trials count); finished trials are never redone; a trial whose worker was
    killed is marked FAIL and its parameters are run again once (a retry). Several
    commands (or --workers) on one study share it: each trial's sampler is seeded from
    (study seed, trial number), so workers and resumed runs never repeat each other's
    draws. Ctrl-C or SIGTERM marks the running trial FAIL (interrupted) and exits with
    code 130 within seconds.
    """
    from search.engine import loop as engine
    from search.config import parse_assignments
    from search.reporting import pct
    from search.interrupts import GRACE_S, exit_within
    from search.store import storage_label
    from search.study import load_study
    from search.engine import WORKER_ENV

    spec = load_study(study_name)
    options = engine.SearchOptions(n_trials=n_trials, timeout=timeout, data_dir=data_dir,
                                   device=device, storage=storage,
                                   overrides=parse_assignments(assignments),
                                   max_consecutive_failures=max_failures, heartbeat=heartbeat)
    target = n_trials or spec.n_trials
    # Ctrl-C and SIGTERM (a scheduler preempting the job) end the command within a bounded
    # time: the worker's clean-up gets GRACE_S, the parent of --workers a little more.
    exit_within(GRACE_S + 2 if workers > 1 or gpus else GRACE_S)
    if workers > 1 or gpus:
        _run_workers(spec, options, workers, gpus, trials_per_gpu, no_retrain)
        return
    prefix = f"[worker {os.environ[WORKER_ENV]}] " if WORKER_ENV in os.environ else ""
    click.echo(f"{prefix}study {spec.name}: {spec.dataset}, {spec.sampler} sampler, "
               f"{spec.pruner} pruner, target {target} trials; storage "
               f"{storage_label(spec.name, storage)}")

    def fmt(metric: str, value: float | None) -> str:
        return "-" if value is None else (pct(value) if metric != "val_loss" else f"{value:.4f}")

    def on_epoch(e: engine.EpochEvent) -> None:
        fold = f" fold {e.fold + 1}/{e.folds}" if e.folds > 1 else ""
        click.echo(f"{prefix}  trial {e.trial}{fold} epoch {e.stats.epoch}/{e.epochs}  "
                   f"loss {e.stats.train_loss:.4f}  {e.metric} {fmt(e.metric, getattr(e.stats, e.metric))}"
                   f"  best {fmt(e.metric, e.best)}  {e.stats.seconds:.1f}s")

    def on_trial(e: engine.TrialEvent) -> None:
        c = e.counts
        what = {"COMPLETE": f"complete, {spec.metric} {fmt(spec.metric, e.value)}",
                "PRUNED": "pruned", "FAIL": f"FAILED ({e.reason})"}.get(e.state, e.state)
        retry = f" (retry of {e.retry_of})" if e.retry_of is not None else ""
        click.echo(f"{prefix}trial {e.trial}{retry} {what}   best {fmt(spec.metric, e.best)}   "
                   f"[{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed]")

    try:
        outcome = engine.run_search(
            spec, options, on_epoch, on_trial,
            lambda running: click.echo(f"{prefix}waiting for {running} running trial(s) of "
                                       f"other workers: the target is reached if they finish"))
    except KeyboardInterrupt:
        click.echo(f"{prefix}interrupted: the running trial is marked FAIL (interrupted); "
                   f"rerun the same command to continue", err=True)
        sys.exit(130)
    if outcome.ran == 0:
        click.echo(f"{prefix}nothing to do: the study has its {outcome.target} finished trials "
                   f"(raise --n-trials to run more)")
    if prefix:
        return
    click.echo(_study_summary(spec, outcome.study))
    if not no_retrain:
        _retrain_and_print(spec, outcome.study, outcome.parent_run_id, None, None, data_dir,
                           device)


def _run_workers(spec, options, workers: int, gpus: str | None, trials_per_gpu: int,
                 no_retrain: bool) -> None:
    from search.engine import loop as engine
    from search.config import format_value
    from search.store import Tracker
    from search.engine import run_workers, worker_envs

    gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    argv = [sys.executable, str(Path(__file__).resolve()), "search", "--study", str(spec.path),
            "--no-retrain", "--max-failures", str(options.max_consecutive_failures),
            "--heartbeat", str(options.heartbeat)]
    for flag, value in (("--n-trials", options.n_trials), ("--timeout", options.timeout),
                        ("--data-dir", options.data_dir), ("--storage", options.storage),
                        ("--device", "cuda" if gpu_ids else options.device)):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in options.overrides.items():
        argv += ["--set", f"{key}={format_value(value)}"]
    envs = worker_envs(workers, gpu_ids, trials_per_gpu)
    click.echo(f"starting {len(envs)} workers on study {spec.name}"
               + (f" (GPUs {', '.join(gpu_ids)}, {trials_per_gpu} per GPU)" if gpu_ids else ""))
    try:
        codes = run_workers(argv, envs)
    except KeyboardInterrupt:
        click.echo("interrupted: the workers' running trials are marked FAIL (interrupted); "
                   "rerun the same command to continue", err=True)
        sys.exit(130)
    if 130 in codes:
        sys.exit(130)
    if any(codes):
        # a worker killed by a signal has a negative code: still a failure of the command
        click.echo(f"error: worker exit codes {codes}", err=True)
        sys.exit(max(max(codes), 1))
    study = engine.open_study(spec, options.storage, create=False)
    click.echo(_study_summary(spec, study))
    if not no_retrain:
        parent = Tracker(spec.name).study_run({})
        _retrain_and_print(spec, study, parent, None, None, options.data_dir, options.device)


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--trial", "trial_number", type=int, help="trial number (default: the best trial)")
@click.option("--seeds", help="comma-separated seeds (default: the study file's [retrain] seeds)")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--device", help="auto, cpu, cuda, cuda:N")
@click.option("--storage", help=STORAGE_HELP)
def retrain(study_name: str, trial_number: int | None, seeds: str | None, data_dir: str | None,
            device: str | None, storage: str | None) -> None:
    """Retrain a trial's config on train+validation once per seed; test once per seed."""
    from search.engine import loop as engine
    from search.study import load_study
    from search.store import Tracker

    spec = load_study(study_name)
    study = engine.open_study(spec, storage, create=False)
    parent = Tracker(spec.name).study_run({})
    _retrain_and_print(spec, study, parent, trial_number, _parse_seeds(seeds) if seeds else None,
                       data_dir, device)


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError("expected comma-separated integers, e.g. 0,1,2", key="--seeds",
                          value=text) from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError("expected distinct non-negative integers", key="--seeds", value=text)
    return seeds


def _retrain_and_print(spec, study, parent_id, trial_number, seeds, data_dir, device) -> None:
    from search.reporting import epoch_line, pct, summary
    from search.retrain import final_retrain
    from search.store import Tracker

    epochs = spec.retrain.epochs
    click.echo(f"final retrain on train+validation, {epochs} epochs, evaluated once on the test split")
    outcome = final_retrain(spec, study, Tracker(spec.name), parent_id, trial_number=trial_number,
                            seeds=seeds, data_dir=data_dir, device=device,
                            on_epoch=lambda seed, s: click.echo(epoch_line(s, epochs, f"  seed {seed} ")))
    for seed, result in outcome.results.items():
        click.echo(f"seed {seed}: test accuracy {pct(result.final.accuracy)}  top-5 "
                   f"{pct(result.final.top5)}  loss {result.final.loss:.4f}")
    if len(outcome.results) == 1:
        click.echo(summary(next(iter(outcome.results.values())), outcome.classes))
    mean, std = outcome.mean_std("accuracy")
    spread = f" ± {pct(std)} (sd over {len(outcome.results)} seeds)" if len(outcome.results) > 1 \
        else " (1 seed: no spread)"
    click.echo(f"final (trial {outcome.trial_number}): test accuracy {pct(mean)}{spread}   "
               f"MLflow run {outcome.run_id}")


def _study_summary(spec, study) -> str:
    from search.reporting import pct, table
    from search.store import state_counts

    counts = state_counts(study)
    lines = [f"\nstudy {spec.name}: {counts['complete']} complete, {counts['pruned']} pruned, "
             f"{counts['failed']} failed"]
    complete = [t for t in study.trials if t.value is not None]
    if not complete:
        return "\n".join(lines + ["no COMPLETE trial yet"])
    reverse = spec.direction == "maximize"
    top = sorted(complete, key=lambda t: t.value, reverse=reverse)[:5]
    best = top[0]
    fmt = (lambda v: pct(v)) if spec.metric != "val_loss" else (lambda v: f"{v:.4f}")
    lines.append(f"best trial {best.number}: {spec.metric} {fmt(best.value)}")
    lines += [f"  {k} = {v}" for k, v in best.params.items()]
    keys = sorted({k for t in top for k in t.params})
    rows = [[t.number, fmt(t.value)] + [t.params.get(k, "-") for k in keys] for t in top]
    rows = [[f"{c:.4g}" if isinstance(c, float) else c for c in r] for r in rows]
    lines += ["top trials:", table(["trial", spec.metric, *keys], rows)]
    return "\n".join(lines)


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="write to this file instead of stdout")
def best(study_name: str, fmt: str, output: str | None) -> None:
    """The best trial's configuration and scores, read from MLflow; the file reruns with
    `cli.py train --config FILE --test`."""
    from search.reporting import best_config_document
    from search.study import load_study

    text = best_config_document(load_study(study_name), fmt)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on (loopback by default)")
@click.option("--port", default=8080, show_default=True, type=int)
def dashboard(study_name: str, storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study's storage (history, importance, parallel
    coordinates)."""
    import optuna_dashboard

    from search.store import open_storage
    from search.study import load_study

    spec = load_study(study_name)
    store = open_storage(spec.name, storage, create=False)
    import socket

    try:  # fail with one line before the web server prints its banner
        with socket.socket() as probe:
            probe.bind((host, port))
    except OSError as exc:  # port in use, address not available
        raise ConfigError(f"cannot serve the dashboard on {host}: {exc.strerror or exc}",
                          key="--port", value=port) from None
    click.echo(f"optuna-dashboard for study {spec.name}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)")
    optuna_dashboard.run_server(store, host=host, port=port)


@main.command()
@click.option("--storage", help=STORAGE_HELP)
def studies(storage: str | None) -> None:
    """The study files, with dataset, space size, trials done / target and best value."""
    from search.reporting import table
    from search.reporting import study_rows

    click.echo(table(["study", "dataset", "sampler", "space", "done/target", "best", "file"],
                     study_rows(storage), align="llllrrl"))


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--seeds", default="3", show_default=True,
              help="a count N (seeds 0..N-1) or a comma-separated list, e.g. 0,1,2")
@click.option("--base", default="auto", show_default=True,
              help="baseline: best (the study's best trial, from MLflow), fixed (the study "
                   "file's fixed values), auto (best if searched, else fixed) or a config FILE")
@click.option("--variants", help="comma-separated variant names (default: all)")
@click.option("--leave-one-out", is_flag=True,
              help="instead of the file's [[ablation]] entries, switch off each enabled "
                   "component of the baseline in turn")
@click.option("--on", "split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="evaluate on the test split (train on train+val) or on validation (train on train)")
@click.option("--force", is_flag=True, help="retrain even runs already found in MLflow")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--device", help="auto, cpu, cuda, cuda:N")
@click.option("--out", type=click.Path(file_okay=False),
              help="also write ablation.md, ablation.csv and ablation.png here")
def ablate(study_name: str, seeds: str, base: str, variants: str | None, leave_one_out: bool,
           split: str, force: bool, data_dir: str | None, device: str | None,
           out: str | None) -> None:
    """Rerun fixed ablations over paired seeds and say which differences are real.

    Each variant and the baseline train with the same seeds for the study's final epochs;
    runs already in MLflow with the same resolved config are reused, so adding seeds only
    trains the new ones.
    """
    from search.ablation import HEADERS, run_ablation, table_rows, write_files
    from search.reporting import table
    from search.study import load_study

    spec = load_study(study_name)
    seed_list = _seed_list(seeds)
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None

    def on_run(variant, seed, record) -> None:
        how = "reused" if record.reused else f"trained in {record.train_seconds:.1f}s"
        click.echo(f"{variant.name} seed {seed}: {split} accuracy {100 * record.accuracy:.2f}% ({how})")

    outcome = run_ablation(spec, seeds=seed_list, base=base, variant_names=names,
                           use_leave_one_out=leave_one_out, on=split, force=force,
                           data_dir=data_dir, device=device, on_run=on_run)
    click.echo(f"\nbaseline: {outcome.base_label}; {outcome.trained} run(s) trained, "
               f"{len(outcome.records) - outcome.trained} reused")
    click.echo(table(HEADERS, table_rows(outcome), align="lrrrrrrrlrrr"))
    if out:
        for path in write_files(outcome, Path(out)):
            click.echo(f"wrote {path}")


def _seed_list(text: str) -> list[int]:
    text = text.strip()
    if text.isdigit() and "," not in text:
        if int(text) < 1:
            raise ConfigError("expected at least 1 seed", key="--seeds", value=text)
        return list(range(int(text)))
    return _parse_seeds(text)


@main.command()
@click.option("--study", "study_name", required=True, help=STUDY_HELP)
@click.option("--out", type=click.Path(file_okay=False), default="report", show_default=True,
              help="folder to write report.md and its PNGs into")
@click.option("--storage", help=STORAGE_HELP)
def report(study_name: str, out: str, storage: str | None) -> None:
    """Write one self-contained folder (markdown + PNG) about a study: summary, history,
    parameter importance, parallel coordinates, the best trial's curves, the final
    retrain's test metrics and confusion matrix, and the latest ablation table."""
    from search.reporting import write_report
    from search.study import load_study

    path = write_report(load_study(study_name), Path(out), storage)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--model", "model_names", default="se_resnet18", show_default=True,
              help="model name, or several separated by commas")
@click.option("--batch-size", default=512, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=2),
              help="steps per timed epoch: ours is timed over 2 epochs after an untimed "
                   "one, the reference over this many batches after 3 warm-up batches")
@click.option("--width", type=float, help="model.width (e.g. 0.25 for a quick CPU run)")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile our model")
@click.option("--concurrency", help="instead: aggregate images/s of N worker processes "
                                    "training at once on the device, e.g. 1,2,4")
def bench(model_names: str, batch_size: int, device: str, steps: int, width: float | None,
          use_compile: bool, concurrency: str | None) -> None:
    """Training images/s: ours (device-resident data, batched augmentation, bf16 +
    channels_last on CUDA) vs the standard DataLoader + PIL transforms + fp32 loop,
    same model, batch, 'full' augmentation and device; or, with --concurrency, the
    aggregate images/s of several of our worker processes sharing the device."""
    from search.config import TrialConfig
    from search.reporting import table

    counts = _counts(concurrency) if concurrency else []  # bad input fails before timing
    names = [m.strip() for m in model_names.split(",") if m.strip()]
    for name in names:
        TrialConfig().with_overrides({"model.name": name})  # unknown names fail before timing
    model_args = {"width": width} if width else None
    if counts:
        from search.perf import concurrent_throughput

        rows = []
        for name in names:
            rates = {n: concurrent_throughput(name, batch_size, device, steps, n, use_compile,
                                              model_args) for n in counts}
            rows.append([name, *(f"{rates[n]:,.0f} ({rates[n] / rates[counts[0]]:.2f}x)"
                                  for n in counts)])
            click.echo(f"measured {name}", err=True)
        click.echo(f"aggregate img/s of N worker processes on one device, batch {batch_size} "
                   f"(speed-up vs N={counts[0]}):")
        click.echo(table(["model", *(f"N={n}" for n in counts)], rows))
        return

    from search.perf import run_bench

    rows = []
    for name in names:
        r = run_bench(name, batch_size, device, steps, use_compile, model_args)
        rows.append((r.model, r.device, r.batch_size, f"{r.ours_images_per_s:,.0f}",
                     f"{r.reference_images_per_s:,.0f}", f"{r.ratio:.2f}x",
                     f"{r.ours_peak_memory_mb:,.0f}", f"{r.train_flops_per_image / 1e9:.2f}",
                     "-" if r.mfu is None else f"{100 * r.mfu:.1f}%"))
        click.echo(f"measured {name}", err=True)
    click.echo(table(["model", "device", "batch", "ours img/s", "reference img/s", "ratio",
                      "peak MB", "GFLOP/img", "MFU"], rows))
    click.echo("peak MB: CUDA memory allocated on the GPU, process RSS on the CPU; "
               "MFU: training FLOPs/image x images/s / the GPU's dense bf16 peak")


@main.command("check-fast-path")
@click.option("--model", default="se_resnet18", show_default=True, help="model name")
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10, cifar100, digits or synthetic")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--seeds", default="5", show_default=True,
              help="number of seeds (0..N-1) or comma-separated seeds")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=2))
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--compile", "use_compile", is_flag=True,
              help="the fast arm also uses torch.compile")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")
def check_fast_path(model: str, dataset: str, data_dir: str | None, seeds: str, epochs: int,
                    assignments: tuple[str, ...], use_compile: bool, device: str) -> None:
    """Check that the fast path (bf16 + channels_last) learns as well as fp32.

    Trains each seed twice on the same holdout of the training split, fast and fp32, and
    compares validation accuracy over the paired seeds. Exits 1 when a run did not learn
    (training loss did not fall, or accuracy not above chance). The test split is not read.
    """
    from search.training import protocols as run
    from search.config import TrialConfig, parse_assignments
    from search.reporting import pct
    from search.perf import FAST, check_fast_path as check

    seed_list = _seed_list(seeds)
    cfg = TrialConfig().with_overrides({"model.name": model, "data.dataset": dataset,
                                        "optim.epochs": epochs, "runtime.device": device,
                                        "runtime.compile": use_compile})
    cfg = cfg.with_overrides(parse_assignments(assignments))
    dataset_ = run.load_dataset(cfg, data_dir)
    click.echo(f"{cfg.model.name} on {cfg.data.dataset}: {epochs} epochs, batch "
               f"{cfg.optim.batch_size}, seeds {', '.join(map(str, seed_list))}")

    def on_run(r) -> None:
        if r.diverged:
            click.echo(f"seed {r.seed}  {r.arm:<4}  {r.diverged}")
            return
        click.echo(f"seed {r.seed}  {r.arm:<4}  loss {r.first_loss:.3f} -> {r.last_loss:.3f}  "
                   f"val_acc {pct(r.val_acc)}  {r.seconds:.1f}s  {r.images_per_s:,.0f} img/s")

    outcome = check(cfg, dataset_, seed_list, on_run)
    c = outcome.comparison
    if not outcome.fast_path_applied:
        click.echo("note: bf16 and channels_last apply on CUDA only; on this device both arms "
                   "ran in fp32")
    p = "-" if c.t_p is None else f"{c.t_p:.3f}"
    if c.n:
        click.echo(f"{FAST} - fp32 validation accuracy: {100 * c.diff_mean:+.2f} pp "
                   f"[95% CI {100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] over {c.n} seeds "
                   f"(fp32 {pct(c.base_mean)}, {FAST} {pct(c.variant_mean)}; paired t p={p}): "
                   f"{c.verdict}")
    failed = outcome.not_learning()
    if failed:
        runs = ", ".join(f"seed {r.seed} {r.arm}" for r in failed)
        click.echo(f"FAILED: did not learn (loss did not fall or accuracy not above chance "
                   f"{pct(outcome.chance)}): {runs}")
        sys.exit(1)
    click.echo(f"every run learned: training loss fell and validation accuracy beat chance "
               f"({pct(outcome.chance)})")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ConfigError("expected comma-separated process counts, e.g. 1,2,4",
                          key="--concurrency", value=text) from None
    if not counts or min(counts) < 1:
        raise ConfigError("expected counts >= 1", key="--concurrency", value=text)
    return counts


def _write_outputs(out: Path, cfg, results) -> None:
    import torch

    from search.training import EvalReport

    def report(r) -> dict:
        f: EvalReport = r.final
        return {"split": f.split, **f.metrics(), "per_class_accuracy": list(f.per_class_accuracy),
                "confusion": f.confusion.tolist(), "n_params": r.n_params,
                "train_seconds": r.train_seconds, "peak_memory_mb": r.peak_memory_mb,
                "history": [s.__dict__ for s in r.history], "stop_reason": r.stop_reason}

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(cfg.to_toml())
    (out / "metrics.json").write_text(json.dumps([report(r) for r in results] if len(results) > 1
                                                 else report(results[0]), indent=2))
    torch.save(results[-1].state_dict, out / "model.pt")
    click.echo(f"wrote {out}/config.toml, metrics.json, model.pt")


if __name__ == "__main__":
    sys.exit(main())
