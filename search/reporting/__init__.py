"""How finished state is shown: terminal lines and tables, figures, the files logged to
MLflow runs, exports and the study report. Reads the store, never trains.

Each name loads its module on first use: ``from search.reporting import table`` (for the
light commands ``cli.py keys`` and ``cli.py studies``) imports neither matplotlib nor the
engine, and so no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.reporting.ablation_table import ablation_run_line, ablation_summary, write_files
    from search.reporting.artifacts import final_figures, write_study_plots
    from search.reporting.dashboard import serve_dashboard
    from search.reporting.exports import (
        best_config_document,
        best_line,
        register_model,
        study_front,
        study_rows,
        write_train_outputs,
    )
    from search.reporting.figures import sample_grid, study_figures
    from search.reporting.final_text import RetrainProgress, final_done_line, final_lines
    from search.reporting.notes import write_dashboard_notes
    from search.reporting.perf_text import (
        bench_progress_line,
        bench_table,
        concurrency_table,
        fast_path_header,
        fast_path_run_line,
        fast_path_verdict,
    )
    from search.reporting.study_report import write_report
    from search.reporting.terminal import (
        SearchProgress,
        dataset_report,
        epoch_line,
        error_summary,
        folds_line,
        interrupted_line,
        keys_table,
        model_table,
        pct,
        studies_table,
        study_summary,
        summary,
        table,
        train_header,
    )

_MODULES = {
    "ablation_table": ["ablation_run_line", "ablation_summary", "write_files"],
    "artifacts": ["final_figures", "write_study_plots"],
    "dashboard": ["serve_dashboard"],
    "exports": [
        "best_config_document",
        "best_line",
        "register_model",
        "study_front",
        "study_rows",
        "write_train_outputs",
    ],
    "figures": ["sample_grid", "study_figures"],
    "final_text": ["RetrainProgress", "final_done_line", "final_lines"],
    "notes": ["write_dashboard_notes"],
    "perf_text": [
        "bench_progress_line",
        "bench_table",
        "concurrency_table",
        "fast_path_header",
        "fast_path_run_line",
        "fast_path_verdict",
    ],
    "study_report": ["write_report"],
    "terminal": [
        "SearchProgress",
        "dataset_report",
        "epoch_line",
        "error_summary",
        "folds_line",
        "interrupted_line",
        "keys_table",
        "model_table",
        "pct",
        "studies_table",
        "study_summary",
        "summary",
        "table",
        "train_header",
    ],
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "RetrainProgress",
    "SearchProgress",
    "ablation_run_line",
    "ablation_summary",
    "bench_progress_line",
    "bench_table",
    "best_config_document",
    "best_line",
    "concurrency_table",
    "dataset_report",
    "epoch_line",
    "error_summary",
    "fast_path_header",
    "fast_path_run_line",
    "fast_path_verdict",
    "final_figures",
    "final_done_line",
    "final_lines",
    "folds_line",
    "interrupted_line",
    "keys_table",
    "model_table",
    "pct",
    "register_model",
    "sample_grid",
    "serve_dashboard",
    "studies_table",
    "study_figures",
    "study_front",
    "study_rows",
    "study_summary",
    "summary",
    "table",
    "train_header",
    "write_dashboard_notes",
    "write_files",
    "write_report",
    "write_study_plots",
    "write_train_outputs",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
