"""What reporting adds to MLflow runs: Optuna's plots on a study's parent run and the
figures of a final retrain. The engine and the retrain take these as callbacks
(``run_search(..., after_search=write_study_plots)``, ``final_retrain(...,
artifacts=final_figures)``), so that they never import the reporting layer. The figure
modules (matplotlib, about 1 s) are imported when a callback runs, not when it is handed
over: ``search`` hands one over before its first trial."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from search.retrain import FinalOutcome
    from search.store import Tracker


def write_study_plots(study: optuna.Study, tracker: Tracker, parent_id: str) -> list[str]:
    """Optuna's plots as self-contained HTML artifacts under ``optuna/`` on the parent run;
    plots that need more trials than exist (importance needs 2 COMPLETE ones) are skipped."""
    from search.reporting.figures import study_figures

    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in study_figures(study).items():
            path = Path(tmp) / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs=True)
            written.append(path.name)
        if written:
            tracker.log_dir(parent_id, Path(tmp), "optuna")
    return written


def final_figures(outcome: FinalOutcome, folder: Path) -> list[Path]:
    """``confusion_matrix.png`` (test split, summed over seeds) and ``training_curves.png``
    (one line per seed) of a final retrain, drawn into ``folder``, and the error analysis
    of the first seed's model (``error_report``: the model ``best`` exports and
    ``best --register`` registers)."""
    from search.reporting.error_report import write_error_analysis
    from search.reporting.figures import confusion_png, curves_png

    seeds = list(outcome.results)
    trial = outcome.trial_number
    analysis = []
    if outcome.dataset is not None:
        first = outcome.results[seeds[0]]
        try:  # best effort: the checkpoints and metrics are logged whatever happens here
            analysis = write_error_analysis(outcome.config, first, outcome.dataset, folder)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"error analysis not written: {type(exc).__name__}: {exc}", stacklevel=2)
    return analysis + [
        confusion_png(
            outcome.confusion,
            outcome.classes,
            folder / "confusion_matrix.png",
            f"test confusion (trial {trial}, seeds {seeds})",
        ),
        curves_png(
            {f"seed {s}": r.history for s, r in outcome.results.items()},
            folder / "training_curves.png",
            f"final retrain of trial {trial}",
        ),
    ]
