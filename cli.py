#!/usr/bin/env python
"""Command line: parse, call ``search.*``, format. Run ``python cli.py --help``."""
from __future__ import annotations

import json
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


DATA_DIR_HELP = "folder holding cifar-10-batches-py/ or cifar-100-python/ (default $CIFAR_DATA_DIR or ./data)"
SET_HELP = "override a config key, e.g. --set optim.lr=0.05 (repeatable; keys: `cli.py keys`)"


@main.command()
def models() -> None:
    """List every model: name, family, knobs and parameters for 10 and 100 classes."""
    import torch

    import cifar_models
    from search.display import table

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
    from search.display import table

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

    from search import data as data_mod
    from search.config import TrialConfig
    from search.display import table

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
        from search.plots import sample_grid

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
    from search import run
    from search.config import TrialConfig, parse_assignments
    from search.display import epoch_line, pct, summary

    cfg = TrialConfig.from_toml(config_file) if config_file else TrialConfig()
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


def _write_outputs(out: Path, cfg, results) -> None:
    import torch

    from search.train import EvalReport

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
