#!/usr/bin/env python
"""Command line: parse, call ``search.*``, print. Run ``python cli.py --help``.

Only the commands live here. As in the mlflow CLI, their options are defined once in
``search/cli_args.py`` (``STUDY``, ``SEEDS``, ..., the ``CommaList`` type); the group class
that turns a user error into one line and exit code 2 is in ``search/cli_setup.py``. Heavy
modules are imported inside the commands that need them, so that ``--help``, ``keys`` and
``studies`` start fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from search import cli_args, cli_setup, cli_slurm_args, reporting

if TYPE_CHECKING:
    from search.study import StudySpec

SCRIPT = Path(__file__).resolve()  # what worker processes of `search --workers` run


@click.group(cls=cli_setup.Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Hyperparameter and ablation search for CIFAR-10/100 classifiers (Optuna + MLflow).

    Start with `models` and `data`, train one config with `train`, then search."""
    cli_setup.configure_libraries()


@main.command()
def models() -> None:
    """List every model: name, family, knobs and parameters for 10 and 100 classes."""
    click.echo(reporting.model_table())


@main.command()
def keys() -> None:
    """List every config key with its default and meaning (for --set and config files)."""
    click.echo(reporting.keys_table())


@main.command()
@cli_args.DATASET()
@cli_args.DATA_DIR()
@cli_args.VAL_FRACTION()
@cli_args.GRID()
def data(dataset: str, data_dir: str | None, val_fraction: float, grid: str | None) -> None:
    """Show a dataset as the tool loads it: splits, images per class, channel mean/std."""
    click.echo(reporting.dataset_report(dataset, data_dir, val_fraction, grid))


@main.command()
@cli_args.TRAIN_MODEL()
@cli_args.TRAIN_DATASET()
@cli_args.DATA_DIR()
@cli_args.CONFIG()
@cli_args.SET()
@cli_args.SEED()
@cli_args.DEVICE()
@cli_args.TEST()
@cli_args.TRAIN_OUT()
def train(
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    config_file: str | None,
    assignments: tuple[str, ...],
    seed: int | None,
    device: str | None,
    test: bool,
    out: str | None,
) -> None:
    """Train one config (like the old train.py) and print per-epoch lines and a summary.

    Without --test the run is evaluated on the validation split (every fold with data.kfold);
    with --test it trains on the whole training split and is evaluated once on the test split.
    With --out, DIR/checkpoints/ lets the same command continue after a kill or a signal."""
    from search.engine.resume import OutFolderCheckpoints
    from search.interrupts import stop_at_batch_boundary
    from search.training import final_run, load_dataset, validate

    keys = ("model.name", "data.dataset", "runtime.seed", "runtime.device")
    options = dict(zip(keys, (model, dataset, seed, device), strict=True))
    cfg = cli_setup.trial_config(options, assignments, config_file)
    dataset_, epochs = load_dataset(cfg, data_dir), cfg.optim.epochs
    checkpoints = OutFolderCheckpoints(cfg, out, click.echo)
    click.echo(reporting.train_header(cfg))

    def line(fold: int | None, stats) -> None:
        prefix = f"fold {fold} " if fold is not None and cfg.data.kfold >= 2 else ""
        click.echo(reporting.epoch_line(stats, epochs, prefix))

    kept = "nothing was kept (`train` keeps checkpoints with --out)"
    stopped = lambda: reporting.interrupted_line(None if out else kept)  # noqa: E731
    with cli_setup.ending_cleanly_on_signals(stopped), stop_at_batch_boundary():
        if test:
            results = [final_run(cfg, dataset_, lambda s: line(None, s), checkpoints(None))]
        else:
            folds = validate(cfg, dataset_, line, checkpoints)
            results = folds.folds
            if len(results) > 1:
                click.echo(reporting.folds_line(folds))
    errors = reporting.error_summary(results[-1], dataset_)  # after --test only
    click.echo("\n".join([reporting.summary(results[-1], dataset_.classes), *errors]))
    if out:
        for path in reporting.write_train_outputs(Path(out), cfg, results, dataset_):
            click.echo(f"wrote {path}")
        checkpoints.finished()


@main.command()
@cli_args.STUDY()
@cli_args.SEARCH_WORKER
@cli_args.TIMEOUT()
@cli_args.NO_RETRAIN()
@cli_args.WORKERS()
@cli_args.GPUS()
@cli_args.TRIALS_PER_GPU()
def search(
    spec: StudySpec,
    assignments: tuple[str, ...],
    no_retrain: bool,
    workers: int,
    gpus: list[str] | None,
    trials_per_gpu: int | None,
    **search_options: Any,
) -> None:
    """Run (or continue) a study: Optuna samples configs, prunes on validation accuracy, logs
    every trial to MLflow, then retrains the best trial and tests it once.

    Rerunning the same command continues the study up to its n_trials (COMPLETE + PRUNED trials
    count); finished trials and a done final retrain are never redone. Each trial is
    checkpointed every epoch: a killed worker's trial is retried from its checkpoint. Several
    commands (or --workers) on one study share it, each trial's sampler seeded from (study
    seed, trial number). Ctrl-C, SIGTERM or SIGUSR1 saves the running trial at the next batch
    and exits within seconds with code 130, 143 or 138; rerunning continues it."""
    from search import engine, interrupts
    from search.engine import WORKER_ENV, WorkersFailed, search_in_workers

    options = _search_options(assignments, **search_options)
    engine.apply_overrides(spec, options.overrides)  # a bad --set fails before any output
    parallel = workers > 1 or bool(gpus)
    interrupts.exit_within(interrupts.GRACE_S + (2 if parallel else 0))  # the parent waits more
    progress = reporting.SearchProgress(spec, os.environ.get(WORKER_ENV), click.echo)
    try:
        if parallel:
            study = search_in_workers(
                SCRIPT,
                spec,
                options,
                workers=workers,
                gpus=gpus,
                trials_per_gpu=trials_per_gpu,
                on_start=lambda n: progress.workers_started(n, gpus),
            )
        else:
            progress.started(options.n_trials or spec.n_trials, options.storage)
            outcome = engine.run_search(
                spec,
                options,
                progress.epoch,
                progress.trial,
                progress.waiting,
                on_warning=progress.warning,
                after_search=reporting.write_study_plots,
            )
            progress.finished(outcome)
            if progress.worker is not None:  # its parent prints the summary and retrains
                return
            study = outcome.study
    except KeyboardInterrupt:
        progress.interrupted(workers=parallel)
        sys.exit(interrupts.exit_code())
    except WorkersFailed as failed:
        progress.workers_failed(failed)
        sys.exit(failed.exit_code)
    click.echo(reporting.study_summary(spec, study))
    from search.retrain import finished_final_run

    done = None if no_retrain else finished_final_run(spec, study)  # a rerun does not retrain
    if done is not None:
        click.echo(reporting.final_done_line(done))
    elif not no_retrain:
        where = {k: getattr(options, k) for k in ("data_dir", "device", "checkpoint_dir")}
        _final_retrain(spec, study, **where)


def _search_options(assignments: tuple[str, ...], max_failures: int, **options: Any) -> Any:
    """The ``SearchOptions`` of ``search`` and ``slurm`` from their shared options."""
    from search.config import parse_assignments
    from search.engine import SearchOptions

    overrides = parse_assignments(assignments)
    return SearchOptions(overrides=overrides, max_consecutive_failures=max_failures, **options)


def _final_retrain(spec: StudySpec, study: Any, **options: Any) -> None:
    """The final retrain of ``search`` and ``retrain``, printed as it goes."""
    from search.retrain import retrain_study

    progress = reporting.RetrainProgress(spec, click.echo)
    progress.started()
    with cli_setup.ending_cleanly_on_signals(reporting.interrupted_line):
        outcome = retrain_study(
            spec, study, on_epoch=progress.epoch, artifacts=reporting.final_figures, **options
        )
    progress.finished(outcome)
    reporting.write_dashboard_notes(spec, study)


@main.command()
@cli_args.STUDY()
@cli_slurm_args.SLURM_WORKERS()
@cli_slurm_args.SLURM_JOB
@cli_args.TRIALS_PER_GPU()
@cli_args.SEARCH_WORKER
def slurm(spec: StudySpec, submit_jobs: bool, assignments: tuple[str, ...], **options: Any) -> None:
    """Run a study on SLURM: write (with --submit, submit) under slurm/<study>/ a job array of
    --workers tasks, one worker each; a final job that retrains the best trial once after
    them; and an MLflow server job, the one writer of the MLflow store.

    Ahead of a time limit SLURM sends SIGUSR1: the worker checkpoints at the next batch and
    the task requeues itself. A trial of a task killed without warning continues elsewhere
    from its checkpoint. Read the scripts, then: bash slurm/<study>/submit.sh"""
    from search.cluster import SlurmOptions, submit, write_scripts

    job = SlurmOptions(**{k: options.pop(k) for k in list(options) if k in SlurmOptions.fields()})
    paths = write_scripts(SCRIPT, spec, _search_options(assignments, **options), job)
    click.echo("\n".join(f"wrote {path}" for path in paths))
    click.echo(submit(paths[-1]) if submit_jobs else f"read them, then: bash {paths[-1]}")


@main.command()
@cli_args.STUDY()
@cli_args.TRIAL()
@cli_args.RETRAIN_SEEDS()
@cli_args.DATA_DIR()
@cli_args.DEVICE()
@cli_args.STORAGE()
@cli_args.CHECKPOINT_DIR()
def retrain(spec: StudySpec, storage: str | None, **options: Any) -> None:
    """Retrain a trial's config on train+validation once per seed; test once per seed.

    Run again after a kill or a signal (exit code 130, 143 or 138), finished seeds are only
    evaluated again and the interrupted one continues from its checkpoint."""
    from search.engine import open_study

    # the options are retrain_study's: --trial, --seeds, --data-dir, --device, --checkpoint-dir
    _final_retrain(spec, open_study(spec, storage, create=False), **options)


@main.command()
@cli_args.STUDY()
@cli_args.TRIAL()
@cli_args.FORMAT()
@cli_args.OUTPUT()
@cli_args.REGISTER()
def best(
    spec: StudySpec, trial_number: int | None, fmt: str, output: str | None, register: str | None
) -> None:
    """The best trial's configuration and scores, read from MLflow; the file holds the final
    retrain's config: `cli.py train --config FILE --test` reruns its first seed exactly.

    With several objectives it also prints the Pareto front, and "best" is the front's best
    on the first objective; --trial N exports another trial."""
    if register:
        click.echo(reporting.register_model(spec, register, trial_number))
        return
    text = reporting.best_config_document(spec, fmt, trial_number)
    if output:
        Path(output).write_text(text)
        if spec.multi_objective:
            click.echo(reporting.study_front(spec, trial_number))
        click.echo(reporting.best_line(spec, trial_number))
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.command()
@cli_args.STUDY()
@cli_args.STORAGE()
@cli_args.HOST()
@cli_args.PORT()
def dashboard(spec: StudySpec, storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study's storage (history, importance, parallel
    coordinates)."""
    reporting.serve_dashboard(spec, storage, host, port, click.echo)


@main.command()
@cli_args.STORAGE()
@cli_args.CHECKPOINT_DIR()
def studies(storage: str | None, checkpoint_dir: str | None) -> None:
    """The study files: dataset, space size, trials done / target, best value, checkpoints."""
    click.echo(reporting.studies_table(storage, checkpoint_dir))


@main.command()
@cli_args.STUDY()
@cli_args.ABLATE_SEEDS()
@cli_args.BASE()
@cli_args.ABLATE_TRIAL()
@cli_args.VARIANTS()
@cli_args.LEAVE_ONE_OUT()
@cli_args.ON()
@cli_args.FORCE()
@cli_args.DATA_DIR()
@cli_args.DEVICE()
@cli_args.STORAGE()
@cli_args.CHECKPOINT_DIR()
@cli_args.ABLATE_OUT()
def ablate(
    spec: StudySpec,
    seeds: list[int],
    base: str,
    trial_number: int | None,
    variants: list[str] | None,
    leave_one_out: bool,
    split: str,
    force: bool,
    data_dir: str | None,
    device: str | None,
    storage: str | None,
    checkpoint_dir: str | None,
    out: str | None,
) -> None:
    """Rerun fixed ablations over paired seeds and say which differences are real.

    Each variant and the baseline train with the same seeds for the study's final epochs; runs
    already in MLflow with the same resolved config are reused, so adding seeds only trains the
    new ones (--seeds 0,1,2 then --seeds 0,1,2,3,4 trains seeds 3 and 4); after a kill or a
    signal, the same command continues the interrupted run from its checkpoint."""
    from search.ablation import run_ablation

    with cli_setup.ending_cleanly_on_signals(reporting.interrupted_line):
        outcome = run_ablation(
            spec,
            seeds=seeds,
            base=base,
            trial_number=trial_number,
            variant_names=variants,
            use_leave_one_out=leave_one_out,
            on=split,
            force=force,
            data_dir=data_dir,
            device=device,
            artifacts=reporting.write_files,
            on_run=lambda v, seed, r: click.echo(reporting.ablation_run_line(v, seed, r, split)),
            checkpoint_dir=checkpoint_dir,
        )
    click.echo(reporting.ablation_summary(outcome))
    for path in reporting.write_files(outcome, Path(out)) if out else []:
        click.echo(f"wrote {path}")
    reporting.write_dashboard_notes(spec, storage=storage)  # if the study was searched


@main.command()
@cli_args.STUDY()
@cli_args.REPORT_OUT()
@cli_args.STORAGE()
@cli_setup.ending_cleanly_on_signals(lambda: reporting.interrupted_line("run it again"))
def report(spec: StudySpec, out: str, storage: str | None) -> None:
    """Write one self-contained folder (markdown + PNG) about a study: summary, history,
    parameter importance, parallel coordinates, the best trial's curves, the final retrain's
    test metrics and confusion matrix, and the latest ablation table."""
    click.echo(f"wrote {reporting.write_report(spec, Path(out), storage)}")


@main.command()
@cli_args.BENCH_MODELS()
@cli_args.BATCH_SIZE()
@cli_args.DEVICE_AUTO()
@cli_args.STEPS()
@cli_args.WIDTH()
@cli_args.BENCH_COMPILE()
@cli_args.CONCURRENCY()
@cli_setup.ending_cleanly_on_signals(lambda: reporting.interrupted_line("no table; see above"))
def bench(
    model_names: list[str],
    batch_size: int,
    device: str,
    steps: int,
    width: float | None,
    compile_mode: str | None,
    concurrency: list[int] | None,
) -> None:
    """Training images/s: ours (device-resident data, batched augmentation, bf16 + channels_last
    on CUDA) vs the standard DataLoader + PIL transforms + fp32 loop, same model, batch, 'full'
    augmentation and device; or, with --concurrency, the aggregate images/s of several of our
    worker processes sharing the device."""
    from search.perf import measure_models

    extra = {"width": width} if width else None
    measured = measure_models(
        model_names, batch_size, device, steps, compile_mode, extra, concurrency,
        on_measured=lambda *m: click.echo(reporting.bench_progress_line(*m), err=True),
    )  # fmt: skip
    click.echo(
        reporting.concurrency_table(measured, batch_size, compile_mode)
        if concurrency
        else reporting.bench_table(list(measured.values()))
    )


@main.command("check-fast-path")
@cli_args.CHECK_MODEL()
@cli_args.DATASET()
@cli_args.DATA_DIR()
@cli_args.CHECK_SEEDS()
@cli_args.EPOCHS()
@cli_args.SET()
@cli_args.CHECK_COMPILE()
@cli_args.DEVICE_AUTO()
def check_fast_path(
    model: str,
    dataset: str,
    data_dir: str | None,
    seeds: list[int],
    epochs: int,
    assignments: tuple[str, ...],
    use_compile: bool,
    device: str,
) -> None:
    """Check that the fast path (bf16 + channels_last) learns as well as fp32.

    Trains each seed twice on the same holdout of the training split, fast and fp32, and
    compares validation accuracy over the paired seeds. Exits 1 when a run did not learn
    (training loss did not fall, or accuracy not above chance). The test split is not read."""
    from search.perf import check_fast_path as check
    from search.training import load_dataset

    keys = ("model.name", "data.dataset", "optim.epochs", "runtime.device", "runtime.compile")
    options = dict(zip(keys, (model, dataset, epochs, device, use_compile), strict=True))
    cfg = cli_setup.trial_config(options, assignments)
    dataset_ = load_dataset(cfg, data_dir)
    click.echo(reporting.fast_path_header(cfg, seeds))
    outcome = check(cfg, dataset_, seeds, lambda r: click.echo(reporting.fast_path_run_line(r)))
    click.echo(reporting.fast_path_verdict(outcome))
    if outcome.not_learning():
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
