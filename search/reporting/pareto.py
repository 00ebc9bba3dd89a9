"""A multi-objective study as text: every measure in its unit, and the Pareto front as a
table with the trial that ``best``, ``retrain`` and ``ablate`` pick by default marked.
Light (no torch): ``cli.py best`` and ``cli.py studies`` use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from search.study.objectives import pareto_front, preferred

if TYPE_CHECKING:
    from search.study import StudySpec


def measure_text(measure: str, value: float | None) -> str:
    """An objective's value as printed: accuracies in %, costs in their unit."""
    if value is None:
        return "-"
    if measure in ("val_acc", "val_top5"):
        return f"{100 * value:.2f}%"
    if measure == "params":
        return f"{value / 1e6:.3f}M"
    if measure == "train_flops":
        return f"{value / 1e9:.3f} GFLOP"
    if measure == "inference_ms":
        return f"{value:.4f} ms"
    if measure == "epoch_seconds":
        return f"{value:.2f} s"
    return f"{value:.4f}"


def values_text(measures: Sequence[str], values: Sequence[float]) -> str:
    """``val_acc 91.20%, params 0.270M``."""
    return ", ".join(f"{m} {measure_text(m, v)}" for m, v in zip(measures, values, strict=True))


def front_table(
    spec: StudySpec,
    candidates: Sequence[tuple[int, Sequence[float]]],
    chosen: int | None = None,
    extra: dict[int, str] | None = None,
) -> str:
    """The Pareto front of ``candidates`` (``(trial, values)`` of COMPLETE trials), best
    first on the first objective; ``chosen`` (default: the preferred trial) marked with
    ``*``. ``extra`` adds a last column (e.g. the test accuracy of retrained trials)."""
    from search.reporting.text import table

    front = pareto_front(candidates, spec.directions)
    chosen = preferred(candidates, spec.directions) if chosen is None else chosen
    headers = [
        "",
        "trial",
        *(f"{m} ({o.direction[:3]})" for m, o in zip(spec.measures, spec.objectives)),
    ]
    rows = [
        [
            "*" if n == chosen else "",
            n,
            *(measure_text(m, v) for m, v in zip(spec.measures, values)),
        ]
        for n, values in front
    ]
    if extra is not None:
        headers.append("final test accuracy")
        rows = [row + [extra.get(row[1], "-")] for row in rows]
    return table(headers, rows, align="lr" + "r" * (len(headers) - 2))


def front_summary(
    spec: StudySpec,
    candidates: Sequence[tuple[int, Sequence[float]]],
    chosen: int | None = None,
) -> list[str]:
    """Lines: the front's size, its table and which trial is picked by default."""
    front = pareto_front(candidates, spec.directions)
    default = preferred(candidates, spec.directions)
    lines = [
        f"Pareto front: {len(front)} of {len(candidates)} complete trials "
        f"({', '.join(map(str, spec.objectives))})",
        front_table(spec, candidates, chosen),
    ]
    if chosen is None or chosen == default:
        lines.append(
            f"* trial {default}: the default pick (the front's best {spec.measures[0]}); "
            f"choose another with --trial N"
        )
    else:
        off = "" if any(n == chosen for n, _ in front) else ", not on the front"
        lines.append(f"* trial {chosen}: chosen with --trial{off} (default: trial {default})")
    return lines
