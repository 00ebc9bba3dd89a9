"""Ablations you can trust: the baseline and each variant, trained over the same seeds
(paired), each evaluated once on the test split (or on validation with ``on="val"``),
compared with paired statistics (``search.stats``).

Reruns are cheap: a run is identified by a hash of its resolved config and split, and a
FINISHED MLflow run with that hash is reused unless ``force``, as is on the test split a
seed of a FINISHED final retrain (the same computation: ``final_run``). The table and its
files are drawn by the reporting layer (``ablation_table``), passed in as ``artifacts``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cifar_models
from search import interrupts
from search.config import TrialConfig
from search.engine.resume import RESUMED_TAG, resumable
from search.errors import ConfigError, did_you_mean
from search.stats import Comparison, compare
from search.store import Tracker, checkpoint_root, config_of
from search.store.locations import ablation_checkpoint
from search.study import AblationSpec, StudySpec
from search.study.objectives import choose
from search.training import AugmentPlan, EpochStats, TrainResult, final_run, load_dataset, train_one
from search.training.protocols import make_fold

BASELINE = "baseline"
HASH_TAG = "cifar_search.config_hash"
VARIANT_TAG = "cifar_search.variant"
# Keys that do not change what is trained: excluded from the reuse hash.
NOT_IN_HASH = ("runtime.device", "runtime.eval_batch_size")
# A finished run as reuse finds it: run id, metrics, and whether a final retrain logged it.
Logged = tuple[str, dict[str, float], bool]


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
    from_final: bool = False  # reused from a seed of the study's final retrain


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

    def of(self, variant: str) -> list[RunRecord]:
        return [r for r in self.records if r.variant == variant]

    @property
    def trained(self) -> int:
        return sum(not r.reused for r in self.records)


# baseline and variants ------------------------------------------------------------------
def resolve_base(
    spec: StudySpec, base: str, tracker: Tracker, trial_number: int | None = None
) -> tuple[TrialConfig, str]:
    """The baseline config and a label saying where it came from.

    ``best``: the study's best trial read from MLflow (or trial ``trial_number``; with
    several objectives the Pareto front's best on the first one), with the final epochs;
    ``fixed``: the study file's fixed values (ablation-only studies);
    ``auto``: best when the study has a searched trial, else fixed; anything else is a
    config file used exactly as written.
    """
    final = {"optim.epochs": spec.retrain.epochs}
    if trial_number is not None and not spec.space:
        raise ConfigError(
            "this study searches nothing ([space] is empty): it has no trials to pick",
            key="--trial",
            value=trial_number,
        )
    if trial_number is not None and base not in ("auto", "best"):
        raise ConfigError(
            "--trial picks a searched trial as the baseline: use it without --base",
            key="--base",
            value=base,
        )
    if base in ("auto", "best"):
        runs = {n: (v, r) for n, v, r in tracker.complete_trial_runs(spec.objective_metrics)}
        number = choose([(n, v) for n, (v, _) in runs.items()], spec.directions, trial_number)
        if number is not None and spec.space:
            which = "best trial" if trial_number is None else "trial"
            config = config_of(runs[number][1]).with_overrides(final)
            return config, f"{which} {number} (from MLflow)"
        if base == "best":
            raise ConfigError(
                "no COMPLETE trial in MLflow to use as the baseline: run "
                "`cli.py search` first, or use --base fixed or --base FILE",
                key="--base",
                value=base,
            )
    if base in ("auto", "fixed"):
        return spec.base_config().with_overrides(final), "the study file's fixed config"
    return TrialConfig.from_file(base), f"config file {base}"


def leave_one_out(base: TrialConfig) -> list[AblationSpec]:
    """A variant per enabled component of ``base`` with that component switched off:
    attention, dropout, each augmentation, label smoothing, weight decay."""
    knobs = (
        cifar_models.model_knobs(base.model.name) if not base.model.name.startswith("timm:") else {}
    )
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
    return [
        AblationSpec(name, overrides, "leave-one-out")
        for name, enabled, overrides in candidates
        if enabled
    ]


def build_variants(
    spec: StudySpec, base: TrialConfig, names: Sequence[str] | None, use_leave_one_out: bool
) -> list[Variant]:
    """The baseline first, then the chosen variants applied on top of it."""
    available = leave_one_out(base) if use_leave_one_out else list(spec.ablations)
    if not available:
        raise ConfigError(
            "no ablation variants: add [[ablation]] entries to the study file "
            "or use --leave-one-out",
            file=str(spec.path),
            key="ablation",
        )
    by_name = {a.name: a for a in available}
    for name in names or ():
        if name not in by_name:
            raise ConfigError(
                f"unknown variant{did_you_mean(name, by_name)}; available: {', '.join(by_name)}",
                key="--variants",
                value=name,
            )
    chosen = [by_name[n] for n in names] if names else available
    variants = [Variant(BASELINE, base, "")]
    for a in chosen:
        try:
            variants.append(Variant(a.name, base.with_overrides(a.overrides), a.description))
        except ConfigError as exc:
            raise ConfigError(
                f"variant {a.name!r} does not apply to the baseline: {exc}",
                file=str(spec.path),
                key="ablation",
            ) from None
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
def run_ablation(
    spec: StudySpec,
    *,
    seeds: Sequence[int],
    base: str = "auto",
    trial_number: int | None = None,
    variant_names: Sequence[str] | None = None,
    use_leave_one_out: bool = False,
    on: str = "test",
    force: bool = False,
    data_dir: str | None = None,
    device: str | None = None,
    on_run: Callable[[Variant, int, RunRecord], None] = lambda v, s, r: None,
    on_epoch: Callable[[Variant, int, EpochStats], None] | None = None,
    artifacts: Callable[[AblationOutcome, Path], object] | None = None,
    checkpoint_dir: str | None = None,
) -> AblationOutcome:
    """Train (or reuse) the baseline and each variant over ``seeds`` and compare them.

    Every run is checkpointed under the study's checkpoint folder by its reuse hash: run
    again after a kill or a signal, the finished runs are reused from MLflow and the
    interrupted one continues from its checkpoint (its run tagged with the epochs restored).

    ``artifacts(outcome, folder)`` writes the files to log on the ablation's MLflow run
    (``cli.py ablate`` passes the reporting layer's ``ablation_table.write_files``: the table
    as markdown and CSV, and the chart)."""
    if on not in ("test", "val"):
        raise ConfigError("expected test or val", key="--on", value=on)
    tracker = Tracker(spec.name)
    base_cfg, base_label = resolve_base(spec, base, tracker, trial_number)
    if device:
        base_cfg = base_cfg.with_overrides({"runtime.device": device})
    variants = build_variants(spec, base_cfg, variant_names, use_leave_one_out)
    dataset = load_dataset(base_cfg, data_dir)
    study_parent = tracker.study_run({})
    parent = tracker.start_child(
        study_parent,
        "ablation",
        f"ablation-{on}",
        {
            "base": base_label,
            "split": on,
            "seeds": ",".join(map(str, seeds)),
            "variants": ",".join(v.name for v in variants),
        },
    )
    records: list[RunRecord] = []
    root = checkpoint_root(spec.name, checkpoint_dir)
    logged = {} if force else finished_runs(tracker, on)
    try:
        for variant in variants:
            for seed in seeds:
                cfg = variant.config.with_overrides({"runtime.seed": seed})
                run_hash = config_hash(cfg, on)
                reused = run_hash in logged and not force
                if not reused:
                    callback = on_epoch and (lambda s, v=variant, sd=seed: on_epoch(v, sd, s))
                    logged[run_hash] = _train_and_log(
                        tracker, parent, variant, seed, cfg, on, dataset, callback, root
                    )
                records.append(_record(variant.name, seed, *logged[run_hash], reused))
                on_run(variant, seed, records[-1])
    except BaseException as exc:
        tracker.end(parent, "FAILED", interrupts.ending_reason(exc))
        raise
    accuracy = {
        v.name: {r.seed: r.accuracy for r in records if r.variant == v.name} for v in variants
    }
    comparisons = compare(accuracy.pop(BASELINE), accuracy, cautious=True)
    outcome = AblationOutcome(
        base_label, on, tuple(seeds), variants, records, comparisons, dataset.classes, parent
    )
    _log_outcome(tracker, outcome, artifacts)
    tracker.end(parent, "FINISHED")
    return outcome


def finished_runs(tracker: Tracker, split: str) -> dict[str, Logged]:
    """``{reuse hash: (run id, metrics, from the final retrain)}`` of the study's FINISHED
    ablation runs and, on the test split, of each seed of its FINISHED final retrains (a final
    run logs its first seed's config; the others differ in ``runtime.seed`` only), metrics
    named as an ablation run's; the newest wins; seeds without per-class accuracies skipped."""
    found: dict[str, Logged] = {}
    order, done = ["attributes.start_time DESC"], "attributes.status = 'FINISHED'"
    for run in tracker.find_runs("ablation_run", done, order, max_results=50000):
        if HASH_TAG in run.data.tags:
            found.setdefault(run.data.tags[HASH_TAG], (run.info.run_id, run.data.metrics, False))
    for run in tracker.find_runs("final", done, order) if split == "test" else ():
        try:
            trained = config_of(run)
        except ConfigError:  # logged by an older version: keys since renamed or removed
            continue
        for seed in run.data.tags.get("seeds", "").split(","):
            p = f"seed{seed}."
            m = {
                k[len(p) :].removeprefix("test_"): v
                for k, v in run.data.metrics.items()
                if k.startswith(p)
            }
            if "class_acc.0" in m:
                key = config_hash(trained.with_overrides({"runtime.seed": int(seed)}), "test")
                found.setdefault(key, (run.info.run_id, m, True))
    return found


def _record(variant: str, seed: int, run_id: str, m: dict, final: bool, reused: bool) -> RunRecord:
    """A run's record from its metrics (``accuracy``, ..., ``class_acc.<i>``)."""
    n_classes = sum(k.startswith("class_acc.") for k in m)
    return RunRecord(
        variant,
        seed,
        run_id,
        reused,
        m["accuracy"],
        m["loss"],
        m["top5"],
        int(m["n_params"]),
        m["train_seconds"],
        tuple(m[f"class_acc.{i}"] for i in range(n_classes)),
        final,
    )


def _train_and_log(
    tracker: Tracker,
    parent: str,
    variant: Variant,
    seed: int,
    cfg: TrialConfig,
    split: str,
    dataset,
    on_epoch,
    root: Path,
) -> Logged:
    run_hash = config_hash(cfg, split)
    run = resumable(ablation_checkpoint(root, run_hash), cfg, split=split)
    run_id = tracker.start_child(
        parent,
        "ablation_run",
        f"{variant.name}-seed{seed}",
        {
            VARIANT_TAG: variant.name,
            "seed": seed,
            "split": split,
            HASH_TAG: run_hash,
            **({RESUMED_TAG: run.restored_epochs} if run.checkpoint is not None else {}),
        },
        cfg,
    )
    try:
        with interrupts.stop_at_batch_boundary():
            if split == "test":
                result: TrainResult = final_run(cfg, dataset, on_epoch, run.checkpointing)
            else:
                data = make_fold(cfg, dataset, 0)
                result = train_one(cfg, data, on_epoch, run.checkpointing)
    except BaseException as exc:
        tracker.end(run_id, "FAILED", interrupts.ending_reason(exc))
        raise
    f = result.final
    metrics = {
        "accuracy": f.accuracy,
        "loss": f.loss,
        "top5": f.top5,
        "f1_macro": f.f1_macro,
        "n_params": result.n_params,
        "train_seconds": result.train_seconds,
    }
    metrics.update({f"class_acc.{i}": a for i, a in enumerate(f.per_class_accuracy)})
    tracker.log_metrics(run_id, metrics)
    tracker.end(run_id, "FINISHED")
    run.finished(cfg.runtime.keep_checkpoints)
    return run_id, metrics, False


def _log_outcome(
    tracker: Tracker,
    outcome: AblationOutcome,
    artifacts: Callable[[AblationOutcome, Path], object] | None,
) -> None:
    if artifacts is not None:
        with tempfile.TemporaryDirectory() as tmp:
            artifacts(outcome, Path(tmp))
            tracker.log_dir(outcome.parent_run_id, Path(tmp))
    summary = {f"{c.variant}.diff": c.diff_mean for c in outcome.comparisons}
    tracker.log_metrics(outcome.parent_run_id, summary)
