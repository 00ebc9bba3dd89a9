"""``cli.py report``: one self-contained folder (``report.md`` + PNGs) about a study, from
the Optuna storage and MLflow: summary, optimization history, parameter importance,
parallel coordinates, the best trial's curves, the final retrain's test metrics and
confusion matrix, and the latest ablation table."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from search.engine import loop as engine
from search.reporting.figures import plt
from search.store import state_counts
from search.study import StudySpec
from search.store import TRIAL_TAG, Tracker


def history_png(study: optuna.Study, metric: str, maximize: bool, path: Path) -> Path:
    """Each COMPLETE trial's value, pruned trials at their last reported value, and the
    best value so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in complete], [t.value for t in complete], label="complete")
    ax.scatter([t.number for t in pruned],
               [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               marker="x", color="grey", label="pruned (last report)")
    best, xs, ys = None, [], []
    for t in complete:
        if best is None or (t.value > best if maximize else t.value < best):
            best = t.value
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimization history")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def importance_png(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's default parameter importance (PED-ANOVA in Optuna 5), COMPLETE trials only."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return None
    try:
        importance = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return None
    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance", title=f"parameter importance ({len(complete)} complete trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parallel_png(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """Parallel coordinates of COMPLETE trials: one axis per parameter (scaled to [0, 1];
    log-scaled when the distribution is), lines coloured by the objective."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and t.params]
    if not complete:
        return None
    names = sorted({k for t in complete for k in t.params})
    columns = []
    for name in names:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values = [np.nan if v is None else dist.choices.index(v) for v in raw]
            lo, hi = 0, max(1, len(dist.choices) - 1)
        else:
            log = getattr(dist, "log", False)
            values = [np.nan if v is None else (np.log10(v) if log else v) for v in raw]
            lo = np.log10(dist.low) if log else dist.low
            hi = np.log10(dist.high) if log else dist.high
        columns.append((np.array(values, dtype=float) - lo) / ((hi - lo) or 1))
    data = np.stack(columns, axis=1)
    values = np.array([t.value for t in complete])
    colours = plt.cm.viridis((values - values.min()) / ((values.max() - values.min()) or 1))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    for row, colour in zip(data, colours):
        ax.plot(range(len(names)), row, color=colour, alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title(f"parallel coordinates (colour: {metric}, yellow = high)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_curves_png(tracker: Tracker, run_id: str, path: Path, title: str) -> Path | None:
    """The best trial's per-epoch training loss and validation accuracy from MLflow."""
    series = {key: tracker.client.get_metric_history(run_id, key)
              for key in ("train_loss", "val_loss", "train_acc", "val_acc")}
    if not series["train_loss"]:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, points in series.items():
        points = sorted(points, key=lambda m: m.step)
        ax = ax_loss if key.endswith("loss") else ax_acc
        scale = 1 if key.endswith("loss") else 100
        ax.plot([m.step for m in points], [m.value * scale for m in points], label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _download(tracker: Tracker, run_id: str, artifact: str, dest: Path, name: str) -> Path | None:
    """Copy one artifact of a run into the report folder (None when it is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(tracker.client.download_artifacts(run_id, artifact, tmp))
        except Exception:  # missing artifact: that section is left out of the report
            return None
        shutil.copy(local, dest / name)
    return dest / name


def write_report(spec: StudySpec, out: Path, storage: str | None = None) -> Path:
    """Write ``out/report.md`` and its PNGs; returns the markdown file's path."""
    study = engine.open_study(spec, storage, create=False)
    tracker = Tracker(spec.name, create=False)
    out.mkdir(parents=True, exist_ok=True)
    maximize = spec.direction == "maximize"
    counts = state_counts(study)
    lines = [f"# Study `{spec.name}`", "", spec.description or "", "",
             f"- dataset: {spec.dataset}; sampler: {spec.sampler} (seed {spec.seed}); "
             f"pruner: {spec.pruner}; metric: {spec.metric} ({spec.direction})",
             f"- trials: {counts['complete']} complete, {counts['pruned']} pruned, "
             f"{counts['failed']} failed (target {spec.n_trials})"]
    best = engine.best_value(study)
    if best is not None:
        bt = study.best_trial
        lines.append(f"- best trial {bt.number}: {spec.metric} = {best:.4f}")
        lines += [f"  - `{k}` = {v}" for k, v in bt.params.items()]
    lines.append("")
    sections = [("Optimization history", history_png(study, spec.metric, maximize,
                                                     out / "history.png")),
                ("Parameter importance", importance_png(study, out / "importance.png")),
                ("Parallel coordinates", parallel_png(study, spec.metric, out / "parallel.png"))]
    if best is not None and "mlflow_run_id" in study.best_trial.user_attrs:
        sections.append(("Best trial's learning curves", best_curves_png(
            tracker, study.best_trial.user_attrs["mlflow_run_id"], out / "best_curves.png",
            f"trial {study.best_trial.number}")))
    for title, png in sections:
        if png is not None:
            lines += [f"## {title}", "", f"![{title}]({png.name})", ""]

    finals = tracker.find_runs("final", order_by=["attributes.start_time DESC"], max_results=1)
    if finals and "test_accuracy_mean" in finals[0].data.metrics:
        f = finals[0]
        m = f.data.metrics
        lines += ["## Final retrain (test split)", "",
                  f"Trial {f.data.tags.get(TRIAL_TAG)} retrained on train+validation for "
                  f"{f.data.params.get('optim.epochs')} epochs, seeds {f.data.tags.get('seeds')}:",
                  "", "| metric | mean | std |", "|---|---|---|"]
        for key in ("accuracy", "top5", "loss", "f1_macro"):
            if f"test_{key}_mean" in m:
                lines.append(f"| test {key} | {m[f'test_{key}_mean']:.4f} | {m[f'test_{key}_std']:.4f} |")
        lines.append("")
        if _download(tracker, f.info.run_id, "confusion_matrix.png", out, "confusion_matrix.png"):
            lines += ["![confusion matrix](confusion_matrix.png)", ""]
        if _download(tracker, f.info.run_id, "classification_report.txt", out,
                     "classification_report.txt"):
            lines += ["Per-class precision/recall/F1: [classification_report.txt]"
                      "(classification_report.txt)", ""]

    ablations = [r for r in tracker.find_runs("ablation", order_by=["attributes.start_time DESC"])
                 if r.info.status == "FINISHED"]
    if ablations and _download(tracker, ablations[0].info.run_id, "ablation.md", out, "ablation.md"):
        text = (out / "ablation.md").read_text()
        lines += ["## Ablation", "", text.replace("# Ablation", "### Ablation", 1), ""]
        if _download(tracker, ablations[0].info.run_id, "ablation.png", out, "ablation.png"):
            lines += ["![ablation](ablation.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
