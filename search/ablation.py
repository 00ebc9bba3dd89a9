"""Ablations you can trust: the baseline and each variant, trained over the same seeds
(paired), each evaluated once on the test split (or on validation with ``on="val"``),
compared with paired statistics (``search.stats``).

Reruns are cheap: a run is identified by a hash of its resolved config and split, and a
FINISHED MLflow run with that hash is reused unless ``force``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import cifar_models
from search.training import protocols as run_mod
from search.training import AugmentPlan
from search.config import TrialConfig
from search.errors import ConfigError, did_you_mean
from search.stats import Comparison, compare
from search.study import AblationSpec, StudySpec
from search.store import Tracker, config_of
from search.training import EpochStats, TrainResult, train_one

BASELINE = "baseline"
HASH_TAG = "cifar_search.config_hash"
VARIANT_TAG = "cifar_search.variant"
# Keys that do not change what is trained: excluded from the reuse hash.
NOT_IN_HASH = ("runtime.device", "runtime.eval_batch_size")


@dataclass(frozen=True)
class Variant:
    name: str
    config: TrialConfig
    description: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One variant x seed run (trained now or reused from MLflow)."""

    variant: str
    seed: int
    run_id: str
    reused: bool
    accuracy: float
    loss: float
    top5: float
    n_params: int
    train_seconds: float
    per_class: tuple[float, ...]


@dataclass
class AblationOutcome:
    base_label: str
    split: str
    seeds: tuple[int, ...]
    variants: list[Variant]
    records: list[RunRecord]
    comparisons: list[Comparison]
    classes: tuple[str, ...]
    parent_run_id: str
    files: dict[str, str] = field(default_factory=dict)   # name -> text (md, csv)

    def of(self, variant: str) -> list[RunRecord]:
        return [r for r in self.records if r.variant == variant]

    @property
    def trained(self) -> int:
        return sum(not r.reused for r in self.records)


# baseline and variants ------------------------------------------------------------------
def resolve_base(spec: StudySpec, base: str, tracker: Tracker) -> tuple[TrialConfig, str]:
    """The baseline config and a label saying where it came from.

    ``best``: the study's best trial read from MLflow, with the final epochs;
    ``fixed``: the study file's fixed values (ablation-only studies);
    ``auto``: best when the study has a searched trial, else fixed; anything else is a
    config file used exactly as written.
    """
    final = {"optim.epochs": spec.retrain.epochs}
    if base in ("auto", "best"):
        run = tracker.best_trial_run(spec.direction) if spec.space else None
        if run is not None:
            trial = run.data.tags.get("optuna.trial_number", "?")
            return config_of(run).with_overrides(final), f"best trial {trial} (from MLflow)"
        if base == "best":
            raise ConfigError("no COMPLETE trial in MLflow to use as the baseline: run "
                              "`cli.py search` first, or use --base fixed or --base FILE",
                              key="--base", value=base)
    if base in ("auto", "fixed"):
        return spec.base_config().with_overrides(final), "the study file's fixed config"
    return TrialConfig.from_file(base), f"config file {base}"


def leave_one_out(base: TrialConfig) -> list[AblationSpec]:
    """A variant per enabled component of ``base`` with that component switched off:
    attention, dropout, each augmentation, label smoothing, weight decay."""
    knobs = cifar_models.model_knobs(base.model.name) if not base.model.name.startswith(
        "timm:") else {}
    attention = base.model.attention or knobs.get("attention", "none")
    dropout = base.model.dropout if base.model.dropout is not None else knobs.get("dropout", 0)
    plan = AugmentPlan.from_config(base.aug)
    candidates = [
        ("no_attention", attention != "none", {"model.attention": "none"}),
        ("no_dropout", bool(dropout), {"model.dropout": 0.0}),
        ("no_crop", plan.crop_padding > 0, {"aug.crop_padding": 0}),
        ("no_flip", plan.flip, {"aug.flip": False}),
        ("no_jitter", plan.jitter > 0, {"aug.jitter": 0.0}),
        ("no_erasing", plan.erasing > 0, {"aug.erasing": 0.0}),
        ("no_rotation", plan.rotation > 0, {"aug.rotation": 0.0}),
        ("no_label_smoothing", base.optim.label_smoothing > 0, {"optim.label_smoothing": 0.0}),
        ("no_weight_decay", base.optim.weight_decay > 0, {"optim.weight_decay": 0.0}),
    ]
    return [AblationSpec(name, overrides, "leave-one-out")
            for name, enabled, overrides in candidates if enabled]


def build_variants(spec: StudySpec, base: TrialConfig, names: Sequence[str] | None,
                   use_leave_one_out: bool) -> list[Variant]:
    """The baseline first, then the chosen variants applied on top of it."""
    available = leave_one_out(base) if use_leave_one_out else list(spec.ablations)
    if not available:
        raise ConfigError("no ablation variants: add [[ablation]] entries to the study file "
                          "or use --leave-one-out", file=str(spec.path), key="ablation")
    by_name = {a.name: a for a in available}
    for name in names or ():
        if name not in by_name:
            raise ConfigError(f"unknown variant{did_you_mean(name, by_name)}; available: "
                              f"{', '.join(by_name)}", key="--variants", value=name)
    chosen = [by_name[n] for n in names] if names else available
    variants = [Variant(BASELINE, base, "")]
    for a in chosen:
        try:
            variants.append(Variant(a.name, base.with_overrides(a.overrides), a.description))
        except ConfigError as exc:
            raise ConfigError(f"variant {a.name!r} does not apply to the baseline: "
                              f"{exc}", file=str(spec.path), key="ablation") from None
    return variants


def resolved_flat(cfg: TrialConfig) -> dict:
    """The flat config with every default spelled out (model knobs from the model's
    signature, augmentation toggles from the preset), so that "dropout unset" and
    "dropout = 0.0" on a model whose default is 0.0 are recognised as the same run."""
    flat = cfg.to_flat()
    if not cfg.model.name.startswith("timm:"):
        for knob, default in cifar_models.model_knobs(cfg.model.name).items():
            flat.setdefault(f"model.{knob}", default)
    plan = AugmentPlan.from_config(cfg.aug)
    flat.update({f"aug.{k}": v for k, v in plan.__dict__.items()})
    return flat


def same_run(a: TrialConfig, b: TrialConfig) -> bool:
    return resolved_flat(a) == resolved_flat(b)


def config_hash(cfg: TrialConfig, split: str) -> str:
    """Identity of a run for reuse: the resolved config (minus device) and the split."""
    flat = {k: v for k, v in resolved_flat(cfg).items() if k not in NOT_IN_HASH}
    text = json.dumps({"split": split, "config": flat}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# running -----------------------------------------------------------------------------
def run_ablation(spec: StudySpec, *, seeds: Sequence[int], base: str = "auto",
                 variant_names: Sequence[str] | None = None, use_leave_one_out: bool = False,
                 on: str = "test", force: bool = False, data_dir: str | None = None,
                 device: str | None = None,
                 on_run: Callable[[Variant, int, RunRecord], None] = lambda v, s, r: None,
                 on_epoch: Callable[[Variant, int, EpochStats], None] | None = None
                 ) -> AblationOutcome:
    if on not in ("test", "val"):
        raise ConfigError("expected test or val", key="--on", value=on)
    tracker = Tracker(spec.name)
    base_cfg, base_label = resolve_base(spec, base, tracker)
    if device:
        base_cfg = base_cfg.with_overrides({"runtime.device": device})
    variants = build_variants(spec, base_cfg, variant_names, use_leave_one_out)
    dataset = run_mod.load_dataset(base_cfg, data_dir)
    study_parent = tracker.study_run({})
    parent = tracker.start_child(study_parent, "ablation", f"ablation-{on}", {
        "base": base_label, "split": on, "seeds": ",".join(map(str, seeds)),
        "variants": ",".join(v.name for v in variants)})
    records: list[RunRecord] = []
    try:
        for variant in variants:
            for seed in seeds:
                cfg = variant.config.with_overrides({"runtime.seed": seed})
                record = None if force else _reuse(tracker, variant.name, seed, cfg, on)
                if record is None:
                    callback = None if on_epoch is None else (
                        lambda s, v=variant, sd=seed: on_epoch(v, sd, s))
                    record = _train_and_log(tracker, parent, variant, seed, cfg, on, dataset,
                                            callback)
                records.append(record)
                on_run(variant, seed, record)
    except BaseException as exc:
        tracker.end(parent, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    baseline = {r.seed: r.accuracy for r in records if r.variant == BASELINE}
    comparisons = compare(baseline, {v.name: {r.seed: r.accuracy for r in records
                                              if r.variant == v.name} for v in variants[1:]})
    outcome = AblationOutcome(base_label, on, tuple(seeds), variants, records, comparisons,
                              dataset.classes, parent)
    outcome.files["ablation.md"] = markdown(outcome)
    outcome.files["ablation.csv"] = csv_text(outcome)
    _log_outcome(tracker, outcome)
    tracker.end(parent, "FINISHED")
    return outcome


def _reuse(tracker: Tracker, variant: str, seed: int, cfg: TrialConfig, split: str
           ) -> RunRecord | None:
    runs = tracker.find_runs("ablation_run", f"tags.`{HASH_TAG}` = '{config_hash(cfg, split)}' "
                             f"and attributes.status = 'FINISHED'",
                             order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    m = runs[0].data.metrics
    n_classes = sum(k.startswith("class_acc.") for k in m)
    return RunRecord(variant, seed, runs[0].info.run_id, True, m["accuracy"], m["loss"], m["top5"],
                     int(m["n_params"]), m["train_seconds"],
                     tuple(m[f"class_acc.{i}"] for i in range(n_classes)))


def _train_and_log(tracker: Tracker, parent: str, variant: Variant, seed: int, cfg: TrialConfig,
                   split: str, dataset, on_epoch) -> RunRecord:
    run_id = tracker.start_child(parent, "ablation_run", f"{variant.name}-seed{seed}", {
        VARIANT_TAG: variant.name, "seed": seed, "split": split,
        HASH_TAG: config_hash(cfg, split)}, cfg)
    try:
        if split == "test":
            result: TrainResult = run_mod.final_run(cfg, dataset, on_epoch)
        else:
            result = train_one(cfg, run_mod.make_fold(cfg, dataset, 0), on_epoch)
    except BaseException as exc:
        tracker.end(run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    f = result.final
    metrics = {"accuracy": f.accuracy, "loss": f.loss, "top5": f.top5, "f1_macro": f.f1_macro,
               "n_params": result.n_params, "train_seconds": result.train_seconds}
    metrics.update({f"class_acc.{i}": a for i, a in enumerate(f.per_class_accuracy)})
    tracker.log_metrics(run_id, metrics)
    tracker.end(run_id, "FINISHED")
    return RunRecord(variant.name, seed, run_id, False, f.accuracy, f.loss, f.top5,
                     result.n_params, result.train_seconds, f.per_class_accuracy)


# reporting ---------------------------------------------------------------------------
def _pp(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f}"


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x >= 1e-3 else "<0.001")


def most_changed_classes(outcome: AblationOutcome, variant: str, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` classes whose accuracy moved most (mean paired difference over seeds)."""
    base = {r.seed: np.array(r.per_class) for r in outcome.of(BASELINE)}
    diffs = [np.array(r.per_class) - base[r.seed] for r in outcome.of(variant) if r.seed in base]
    if not diffs:
        return []
    mean = np.mean(diffs, axis=0)
    order = np.argsort(-np.abs(mean))[:k]
    return [(outcome.classes[i], float(mean[i])) for i in order]


def table_rows(outcome: AblationOutcome) -> list[list[str]]:
    """One row per variant (baseline first): the columns of the ablation table."""
    rows = []
    by_name = {c.variant: c for c in outcome.comparisons}
    for v in outcome.variants:
        recs = outcome.of(v.name)
        acc = np.array([r.accuracy for r in recs])
        std = f"{100 * acc.std(ddof=1):.2f}" if len(acc) > 1 else "-"
        common = [f"{100 * acc.mean():.2f} ± {std}", f"{np.mean([r.loss for r in recs]):.4f}",
                  f"{recs[0].n_params:,}", f"{np.mean([r.train_seconds for r in recs]):.1f}"]
        if v.name == BASELINE:
            rows.append([v.name, str(len(recs)), *common[:1], "-", "-", "-", "-", "-",
                         "(reference)", *common[1:]])
            continue
        c = by_name[v.name]
        ci = f"[{_pp(c.ci_low)}, {_pp(c.ci_high)}]"
        same = same_run(v.config, outcome.variants[0].config)  # e.g. "no dropout" at 0 dropout
        rows.append([v.name, str(c.n), *common[:1], _pp(c.diff_mean), ci, _p(c.t_p),
                     _p(c.wilcoxon_p), _p(c.holm_p),
                     "(same config as baseline)" if same else c.verdict, *common[1:]])
    return rows


HEADERS = ["variant", "n", "acc % (mean ± sd)", "diff pp", "95% CI pp", "t-test p", "Wilcoxon p",
           "Holm p", "verdict", "loss", "params", "train s"]


def markdown(outcome: AblationOutcome) -> str:
    split = "test" if outcome.split == "test" else "validation"
    lines = [f"# Ablation ({split} accuracy, paired seeds {', '.join(map(str, outcome.seeds))})",
             "", f"Baseline: {outcome.base_label}.", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(outcome)]
    lines += ["", "diff = variant - baseline, mean over paired seeds; 95% CI t-based; p-values "
              "two-sided (paired t-test, Wilcoxon signed-rank when n >= 6); Holm-corrected "
              "across variants; verdict at alpha = 0.05.", "", "## Variants", ""]
    for v in outcome.variants[1:]:
        changes = ", ".join(f"{k} = {b!r} -> {a!r}" for k, (b, a) in
                            outcome.variants[0].config.diff(v.config).items()) or "same config as the baseline"
        moved = ", ".join(f"{name} {_pp(d)} pp" for name, d in
                          most_changed_classes(outcome, v.name) if d != 0)
        lines.append(f"- **{v.name}**: {changes}. Most changed classes: {moved or '-'}.")
    return "\n".join(lines) + "\n"


def csv_text(outcome: AblationOutcome) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["variant", "seed", "accuracy", "loss", "top5", "n_params", "train_seconds",
                     "mlflow_run_id", "reused"])
    for r in outcome.records:
        writer.writerow([r.variant, r.seed, r.accuracy, r.loss, r.top5, r.n_params,
                         r.train_seconds, r.run_id, r.reused])
    return out.getvalue()


def bar_chart(outcome: AblationOutcome, path: Path) -> Path:
    """Mean accuracy per variant with 95% t-intervals over seeds as error bars."""
    from scipy import stats as st

    from search.reporting import plt

    names, means, errs = [], [], []
    for v in outcome.variants:
        acc = np.array([r.accuracy for r in outcome.of(v.name)]) * 100
        names.append(v.name)
        means.append(acc.mean())
        errs.append(st.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / math.sqrt(len(acc))
                    if len(acc) > 1 else 0.0)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 4))
    colours = ["#4c72b0"] + ["#dd8452"] * (len(names) - 1)
    ax.bar(names, means, yerr=errs, capsize=5, color=colours)
    low = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0, low - 5), min(100, max(m + e for m, e in zip(means, errs)) + 2))
    ax.set_ylabel(f"{outcome.split} accuracy (%)")
    ax.set_title(f"ablation: mean ± 95% CI over {len(outcome.seeds)} paired seeds")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_files(outcome: AblationOutcome, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in outcome.files.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    paths.append(bar_chart(outcome, folder / "ablation.png"))
    return paths


def _log_outcome(tracker: Tracker, outcome: AblationOutcome) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_files(outcome, Path(tmp))
        tracker.log_dir(outcome.parent_run_id, Path(tmp))
    summary = {}
    for c in outcome.comparisons:
        summary[f"{c.variant}.diff"] = c.diff_mean
    tracker.log_metrics(outcome.parent_run_id, summary)
