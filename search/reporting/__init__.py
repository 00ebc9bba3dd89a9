from search.reporting.exports import best_config_document, study_rows
from search.reporting.figures import plt, sample_grid
from search.reporting.study_figures import confusion_png, curves_png, study_figures
from search.reporting.study_report import write_report
from search.reporting.terminal import epoch_line, pct, summary, table

__all__ = [
    "best_config_document",
    "confusion_png",
    "curves_png",
    "epoch_line",
    "pct",
    "plt",
    "sample_grid",
    "study_figures",
    "study_rows",
    "summary",
    "table",
    "write_report",
]
