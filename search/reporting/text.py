"""Plain-text building blocks of every printed line and file: fixed-width tables and
numbers as the tool prints them (accuracies in %, losses with 4 decimals). A leaf of
``search.reporting``: it imports nothing from the package."""

from __future__ import annotations

from collections.abc import Sequence


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A fixed-width table; ``align`` has one 'l' or 'r' per column (default: numbers right)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    if align is None:
        align = "".join(
            "r" if cells and all(_numeric(r[i]) for r in cells) else "l"
            for i in range(len(headers))
        )

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)
        ).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)])


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("%", "").replace("-", "").replace(
        "±", ""
    ).replace(" ", "").isdigit() or text in ("", "-")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def metric_text(metric: str, value: float | None) -> str:
    """A study metric as printed: accuracies in %, losses with 4 decimals."""
    return "-" if value is None else (pct(value) if metric != "val_loss" else f"{value:.4f}")
