"""``cli.py report``: one self-contained folder (``report.md`` + PNGs) about a study, from
the Optuna storage and MLflow: summary, optimization history, parameter importance,
parallel coordinates, the best trial's curves, the final retrain's test metrics and
confusion matrix, and the latest ablation table."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from search.engine import open_study
from search.reporting.exports import best_value
from search.reporting.figures import best_curves_png, history_png, importance_png, parallel_png
from search.store import TRIAL_TAG, Tracker, state_counts
from search.study import StudySpec

CURVES = ("train_loss", "val_loss", "train_acc", "val_acc")  # the metrics best_curves_png draws


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
    study = open_study(spec, storage, create=False)
    tracker = Tracker(spec.name, create=False)
    out.mkdir(parents=True, exist_ok=True)
    maximize = spec.direction == "maximize"
    counts = state_counts(study)
    lines = [
        f"# Study `{spec.name}`",
        "",
        spec.description or "",
        "",
        f"- dataset: {spec.dataset}; sampler: {spec.sampler} (seed {spec.seed}); "
        f"pruner: {spec.pruner}; metric: {spec.metric} ({spec.direction})",
        f"- trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed (target {spec.n_trials})",
    ]
    best = best_value(study)
    if best is not None:
        bt = study.best_trial
        lines.append(f"- best trial {bt.number}: {spec.metric} = {best:.4f}")
        lines += [f"  - `{k}` = {v}" for k, v in bt.params.items()]
    lines.append("")
    sections = [
        ("Optimization history", history_png(study, spec.metric, maximize, out / "history.png")),
        ("Parameter importance", importance_png(study, out / "importance.png")),
        ("Parallel coordinates", parallel_png(study, spec.metric, out / "parallel.png")),
    ]
    if best is not None and "mlflow_run_id" in study.best_trial.user_attrs:
        run_id = study.best_trial.user_attrs["mlflow_run_id"]
        series = {key: tracker.client.get_metric_history(run_id, key) for key in CURVES}
        sections.append(
            (
                "Best trial's learning curves",
                best_curves_png(
                    series, out / "best_curves.png", f"trial {study.best_trial.number}"
                ),
            )
        )
    for title, png in sections:
        if png is not None:
            lines += [f"## {title}", "", f"![{title}]({png.name})", ""]

    finals = tracker.find_runs("final", order_by=["attributes.start_time DESC"], max_results=1)
    if finals and "test_accuracy_mean" in finals[0].data.metrics:
        f = finals[0]
        m = f.data.metrics
        lines += [
            "## Final retrain (test split)",
            "",
            f"Trial {f.data.tags.get(TRIAL_TAG)} retrained on train+validation for "
            f"{f.data.params.get('optim.epochs')} epochs, seeds {f.data.tags.get('seeds')}:",
            "",
            "| metric | mean | std |",
            "|---|---|---|",
        ]
        for key in ("accuracy", "top5", "loss", "f1_macro"):
            if f"test_{key}_mean" in m:
                lines.append(
                    f"| test {key} | {m[f'test_{key}_mean']:.4f} | {m[f'test_{key}_std']:.4f} |"
                )
        lines.append("")
        if _download(tracker, f.info.run_id, "confusion_matrix.png", out, "confusion_matrix.png"):
            lines += ["![confusion matrix](confusion_matrix.png)", ""]
        if _download(
            tracker, f.info.run_id, "classification_report.txt", out, "classification_report.txt"
        ):
            lines += [
                "Per-class precision/recall/F1: [classification_report.txt]"
                "(classification_report.txt)",
                "",
            ]

    ablations = [
        r
        for r in tracker.find_runs("ablation", order_by=["attributes.start_time DESC"])
        if r.info.status == "FINISHED"
    ]
    if ablations and _download(
        tracker, ablations[0].info.run_id, "ablation.md", out, "ablation.md"
    ):
        text = (out / "ablation.md").read_text()
        lines += ["## Ablation", "", text.replace("# Ablation", "### Ablation", 1), ""]
        if _download(tracker, ablations[0].info.run_id, "ablation.png", out, "ablation.png"):
            lines += ["![ablation](ablation.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
