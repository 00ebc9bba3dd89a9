"""``cli.py report``: one self-contained folder (``report.md`` + PNGs) about a study, from
the Optuna storage and MLflow: summary, optimization history, parameter importance,
parallel coordinates, the best trial's curves, the final retrain's test metrics and
confusion matrix, and the latest ablation table."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.trial import TrialState

from search.engine import open_study
from search.reporting.error_analysis import JSON_NAME, error_markdown, read_json
from search.reporting.error_report import FIGURES
from search.reporting.figures import (
    best_curves_png,
    history_png,
    importance_png,
    parallel_png,
    pareto_png,
)
from search.reporting.pareto import front_table
from search.store import TRIAL_TAG, Tracker, state_counts
from search.study import StudySpec
from search.study.objectives import best_value, directions_of, pareto_front, preferred

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


def trial_curves(
    tracker: Tracker, run_id: str, trial: optuna.trial.FrozenTrial
) -> dict[str, list[Any]]:
    """A trial's learning curves from MLflow: ``CURVES``, or with ``data.kfold = k`` each
    fold's (``fold0.val_acc``, ...), which the objective logs at step ``fold * epochs +
    epoch``: moved back to the fold's own epochs, so that the folds overlay."""
    config = trial.user_attrs.get("config", {})
    folds = int(config.get("data.kfold", "0") or 0)
    if folds < 2:
        return {key: tracker.client.get_metric_history(run_id, key) for key in CURVES}
    epochs = int(config.get("optim.epochs", "0"))
    return {
        f"fold{fold}.{key}": [
            SimpleNamespace(step=m.step - fold * epochs, value=m.value)
            for m in tracker.client.get_metric_history(run_id, f"fold{fold}.{key}")
        ]
        for fold in range(folds)
        for key in CURVES
    }


def _chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The trial ``retrain`` picks by default (the best; with several objectives the
    front's best on the first one)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    directions = directions_of(study)
    number = preferred([(t.number, t.values) for t in complete], directions)
    return next((t for t in complete if t.number == number), None)


def retrained_trials(tracker: Tracker) -> dict[int, tuple[float, float, int]]:
    """Trial -> (test accuracy mean, sd, seeds) of its latest finished final retrain."""
    out: dict[int, tuple[float, float, int]] = {}
    for run in tracker.find_runs("final", order_by=["attributes.start_time ASC"]):
        m = run.data.metrics
        if run.info.status == "FINISHED" and "test_accuracy_mean" in m:
            seeds = len([s for s in run.data.tags.get("seeds", "").split(",") if s])
            trial = int(run.data.tags[TRIAL_TAG])
            out[trial] = (m["test_accuracy_mean"], m["test_accuracy_std"], seeds)
    return out


def pareto_section(spec: StudySpec, study: optuna.Study, tracker: Tracker, out: Path) -> list[str]:
    """The front as a table (with the test accuracy of retrained trials) and its PNG."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    points = [(t.number, t.values) for t in complete]
    front = {n for n, _ in pareto_front(points, spec.directions)}
    retrained = retrained_trials(tracker)
    extra = {n: _test_text(m, sd, k) for n, (m, sd, k) in retrained.items()}
    png = pareto_png(spec.measures, spec.directions, points, front, retrained, out / "pareto.png")
    return [
        "## Pareto front",
        "",
        f"{len(front)} of {len(complete)} complete trials are on the front "
        f"({', '.join(map(str, spec.objectives))}); * marks the trial `retrain`, `best` and "
        f"`ablate` pick by default.",
        "",
        "```",
        front_table(spec, points, extra=extra),
        "```",
        "",
        f"![Pareto front]({png.name})",
        "",
    ]


def error_section(tracker: Tracker, final: Any, out: Path) -> list[str]:
    """The final model's error analysis, as its retrain logged it (first seed)."""
    if not _download(tracker, final.info.run_id, JSON_NAME, out, JSON_NAME):
        return []
    figures = {
        caption: name
        for name, caption in FIGURES.items()
        if _download(tracker, final.info.run_id, name, out, name)
    }
    seed = final.data.tags.get("seeds", "").split(",")[0]
    text = error_markdown(read_json(out / JSON_NAME), figures=figures)
    return [text.replace("(test split)", f"(test split, seed {seed})", 1), ""]


def write_report(spec: StudySpec, out: Path, storage: str | None = None) -> Path:
    """Write ``out/report.md`` and its PNGs; returns the markdown file's path."""
    study = open_study(spec, storage, create=False)
    tracker = Tracker(spec.name, create=False)
    out.mkdir(parents=True, exist_ok=True)
    maximize = spec.directions[0] == "maximize"
    counts = state_counts(study)
    lines = [
        f"# Study `{spec.name}`",
        "",
        spec.description or "",
        "",
        f"- dataset: {spec.dataset}; sampler: {spec.sampler} (seed {spec.seed}); "
        f"pruner: {spec.pruner}; "
        + (
            f"objectives: {', '.join(map(str, spec.objectives))}"
            if spec.multi_objective
            else f"metric: {spec.metric} ({spec.direction})"
        ),
        f"- trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed (target {spec.n_trials})",
    ]
    best = best_value(study)
    if best is not None:
        bt = study.best_trial
        lines.append(f"- best trial {bt.number}: {spec.metric} = {best:.4f}")
        lines += [f"  - `{k}` = {v}" for k, v in bt.params.items()]
    lines.append("")
    if spec.multi_objective:
        lines += pareto_section(spec, study, tracker, out)
    sections = [
        (
            "Optimization history",
            history_png(study, spec.measures[0], maximize, out / "history.png"),
        ),
        ("Parameter importance", importance_png(study, out / "importance.png")),
        ("Parallel coordinates", parallel_png(study, spec.measures[0], out / "parallel.png")),
    ]
    chosen = _chosen_trial(study)
    if chosen is not None and "mlflow_run_id" in chosen.user_attrs:
        run_id = chosen.user_attrs["mlflow_run_id"]
        series = trial_curves(tracker, run_id, chosen)
        sections.append(
            (
                "Best trial's learning curves",
                best_curves_png(series, out / "best_curves.png", f"trial {chosen.number}"),
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
        lines += error_section(tracker, f, out)

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


def _test_text(mean: float, sd: float, seeds: int) -> str:
    """A final retrain's test accuracy: no spread from one seed, where there is none."""
    if seeds < 2:
        return f"{100 * mean:.2f}% (1 seed)"
    return f"{100 * mean:.2f} ± {100 * sd:.2f}% ({seeds} seeds)"
