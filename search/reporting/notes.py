"""optuna-dashboard tells the story: the study's note (Markdown, shown on the study's page)
holds the final result and the ablation verdicts, and the retrained trial gets a note of
its own. Written after a final retrain and after an ablation, from what MLflow holds then
(the latest finished final run and ablation), so either command leaves the whole story.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from search.errors import ConfigError
from search.store import TRIAL_TAG, Tracker, mask_credentials
from search.study import StudySpec

NOTE_TITLE = "## Results (written by cifar-search)"


def _latest(tracker: Tracker, kind: str) -> object | None:
    runs = tracker.find_runs(kind, order_by=["attributes.start_time DESC"], max_results=50)
    return next((r for r in runs if r.info.status == "FINISHED"), None)


def _run_link(tracker: Tracker, run_id: str) -> str:
    """Where to open a run, on one Markdown line: a link on a tracking server, else the
    `mlflow ui` command and the link to open once it runs (on its default port, 5000).
    MLflow 3's UI opens an experiment in its GenAI view (traces, token usage) whatever the
    experiment's `mlflow.experimentKind` tag says, unless the page's `workflowType` query
    asks for the model-training view (runs, metrics, charts): the links ask for it."""
    uri = tracker.uri
    page = f"/#/experiments/{tracker.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"[{run_id}]({uri.rstrip('/')}{page})"
    command = f"mlflow ui --backend-store-uri {mask_credentials(uri)}"
    return f"`{run_id}` (`{command}`, then open <http://127.0.0.1:5000{page}>)"


def _ablation_markdown(tracker: Tracker, run_id: str) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(tracker.client.download_artifacts(run_id, "ablation.md", tmp))
        except Exception:  # noqa: BLE001 - an ablation logged without its table
            return None
        text = local.read_text()
    return text.replace("# Ablation", "### Ablation", 1)


def study_note(spec: StudySpec, tracker: Tracker) -> str | None:
    """The study's note: the final retrain (trial, test accuracy ± sd over seeds, the MLflow
    run to open) and the latest ablation's table with its verdicts; None when neither
    exists yet."""
    final, ablation = _latest(tracker, "final"), _latest(tracker, "ablation")
    if final is None and ablation is None:
        return None
    lines = [NOTE_TITLE, ""]
    if final is not None:
        m, tags = final.data.metrics, final.data.tags
        seeds = [s for s in tags.get("seeds", "").split(",") if s]
        spread = (
            f" ± {100 * m['test_accuracy_std']:.2f}% (sd over {len(seeds)} seeds)"
            if len(seeds) > 1
            else " (1 seed)"
        )
        lines += [
            "### Final retrain (test split)",
            "",
            f"- trial **{tags.get(TRIAL_TAG)}** retrained on train+validation for "
            f"{final.data.params.get('optim.epochs')} epochs, seeds {', '.join(seeds)}",
            f"- **test accuracy {100 * m['test_accuracy_mean']:.2f}%{spread}**",
            f"- MLflow run: {_run_link(tracker, final.info.run_id)}",
            "",
        ]
    if ablation is not None:
        table = _ablation_markdown(tracker, ablation.info.run_id)
        if table is not None:
            lines += [table, f"MLflow run: {_run_link(tracker, ablation.info.run_id)}", ""]
    return "\n".join(lines)


def write_dashboard_notes(
    spec: StudySpec, study: optuna.Study | None = None, *, storage: str | None = None
) -> bool:
    """Save the study's note, and the retrained trial's note, for optuna-dashboard; False
    when there is nothing to tell yet, or no Optuna study to tell it on (``study`` None:
    the study in ``storage``, if it was ever searched; an ablation-only study never is)."""
    from optuna_dashboard import save_note

    if study is None:
        from search.engine import open_study

        try:
            study = open_study(spec, storage, create=False)
        except ConfigError:
            return False
    tracker = Tracker(spec.name, create=False)
    note = study_note(spec, tracker)
    if note is None:
        return False
    save_note(study, note)
    final = _latest(tracker, "final")
    if final is not None:
        number = int(final.data.tags[TRIAL_TAG])
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if trial is not None:
            m = final.data.metrics
            save_note(
                optuna.Trial(study, trial._trial_id),
                f"## Retrained (final)\n\ntest accuracy **{100 * m['test_accuracy_mean']:.2f}%"
                f" ± {100 * m['test_accuracy_std']:.2f}%** over seeds "
                f"{final.data.tags.get('seeds', '')}; MLflow run "
                f"{_run_link(tracker, final.info.run_id)}",
            )
    return True
