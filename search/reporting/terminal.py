"""Plain-text tables and lines for the terminal (no click here, so the engine can reuse it)."""
from __future__ import annotations

from collections.abc import Sequence

from search.training import EpochStats, EvalReport, TrainResult


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A fixed-width table; ``align`` has one 'l' or 'r' per column (default: numbers right)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if cells and all(_numeric(r[i]) for r in cells) else "l"
                        for i in range(len(headers)))

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                         for c, w, a in zip(row, widths, align)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)])


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("%", "").replace("-", "").replace(
        "±", "").replace(" ", "").isdigit() or text in ("", "-")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def epoch_line(stats: EpochStats, epochs: int, prefix: str = "") -> str:
    parts = [f"{prefix}epoch {stats.epoch:>{len(str(epochs))}}/{epochs}",
             f"loss {stats.train_loss:.4f}", f"acc {pct(stats.train_acc)}"]
    if stats.val_acc is not None:
        parts += [f"val_loss {stats.val_loss:.4f}", f"val_acc {pct(stats.val_acc)}",
                  f"val_top5 {pct(stats.val_top5)}"]
    parts += [f"lr {stats.lr:.4g}", f"{stats.seconds:.1f}s", f"{stats.images_per_s:,.0f} img/s"]
    return "  ".join(parts)


def per_class_table(report: EvalReport, classes: Sequence[str], columns: int = 4) -> str:
    """Per-class accuracy, several classes per row so CIFAR-100 stays readable."""
    entries = [f"{name[:14]:<14} {100 * acc:6.2f}%" for name, acc in
               zip(classes, report.per_class_accuracy)]
    rows = [entries[i:i + columns] for i in range(0, len(entries), columns)]
    return "\n".join("   ".join(r) for r in rows)


def summary(result: TrainResult, classes: Sequence[str]) -> str:
    f = result.final
    split = {"val": "validation", "test": "test"}[f.split]
    lines = [
        f"per-class {split} accuracy:",
        per_class_table(f, classes),
        "",
        f"{split} accuracy {pct(f.accuracy)}   top-5 {pct(f.top5)}   loss {f.loss:.4f}   "
        f"({f.n_images:,} images)",
        f"macro precision {f.precision_macro:.4f}   recall {f.recall_macro:.4f}   "
        f"F1 {f.f1_macro:.4f}",
        f"model {result.config.model.name}: {result.n_params:,} parameters   "
        f"train {result.train_seconds:.1f}s on {result.device}   "
        f"inference {f.inference_ms_per_image:.3f} ms/image   peak memory {result.peak_memory_mb:,.0f} MB",
    ]
    if result.stop_reason:
        lines.append(result.stop_reason)
    return "\n".join(lines)
