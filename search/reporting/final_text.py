"""What the final retrain prints: its progress, its test scores, and where the result of
one already done is."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search.reporting.terminal import epoch_line, error_summary, pct, print_line, summary

if TYPE_CHECKING:
    from search.retrain import FinalOutcome
    from search.study import StudySpec
    from search.training import EpochStats


class RetrainProgress:
    """What the final retrain prints as it goes (``cli.py search`` and ``cli.py retrain``):
    a header, one line per epoch of each seed, then ``final_lines``."""

    def __init__(self, spec: StudySpec, echo: Callable[..., None] = print_line) -> None:
        self.epochs, self.echo = spec.retrain.epochs, echo

    def started(self) -> None:
        self.echo(
            f"final retrain on train+validation, {self.epochs} epochs, evaluated once on the "
            f"test split"
        )

    def epoch(self, seed: int, stats: EpochStats) -> None:
        self.echo(epoch_line(stats, self.epochs, f"  seed {seed} "))

    def finished(self, outcome: FinalOutcome) -> None:
        self.echo(final_lines(outcome))


def final_lines(outcome: FinalOutcome) -> str:
    """The final retrain's test scores per seed and their mean ± sd."""
    lines = [
        f"seed {seed}: test accuracy {pct(r.final.accuracy)}  top-5 {pct(r.final.top5)}  "
        f"loss {r.final.loss:.4f}"
        for seed, r in outcome.results.items()
    ]
    if len(outcome.results) == 1:
        lines.append(summary(next(iter(outcome.results.values())), outcome.classes))
    mean, std = outcome.mean_std("accuracy")
    n = len(outcome.results)
    spread = f" ± {pct(std)} (sd over {n} seeds)" if n > 1 else " (1 seed: no spread)"
    lines.append(
        f"final (trial {outcome.trial_number}): test accuracy {pct(mean)}{spread}   "
        f"MLflow run {outcome.run_id}"
    )
    if outcome.dataset is not None:
        seed, first = next(iter(outcome.results.items()))
        lines += error_summary(first, outcome.dataset, f" (seed {seed})")
    return "\n".join(lines)


def final_done_line(run: Any) -> str:
    """``search`` on a study whose final retrain is already done: where the result is."""
    metrics = run.data.metrics
    accuracy = metrics.get("test_accuracy_mean")
    score = f": test accuracy {pct(accuracy)}" if accuracy is not None else ""
    return (
        f"final retrain already done (trial {run.data.tags.get('optuna.trial_number')}, seeds "
        f"{run.data.tags.get('seeds')}){score}   MLflow run {run.info.run_id}; "
        f"`cli.py retrain` trains it again"
    )
