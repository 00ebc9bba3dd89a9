"""Which ablation differences are real: paired statistics over seeds.

A single run per variant ("SE: +0.94 pp") cannot separate an effect from seed noise. The
tool therefore reruns every ablation variant on the same seeds as the baseline, and this
module compares them seed by seed (a paired design: seed-to-seed variation common to both
runs cancels in the difference). Each variant gets a mean paired difference with a t-based
confidence interval, a paired t-test, a Wilcoxon signed-rank test as a distribution-free
cross-check, and a Holm-Bonferroni correction across all variants compared together, since
testing many variants at once makes some "significant" by chance.

Inputs are per-seed metric values keyed by seed, e.g. test accuracy as a fraction in [0, 1];
differences come out in the same unit (multiply by 100 for percentage points). "Better"
means a *higher* value: for metrics where lower is better (loss, error rate) the caller
passes the negated values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Differences that agree to within a few ulps of the inputs count as identical: 1.0 - 0.9
# and 2.0 - 1.9 differ in the last bits, and scipy would then report t ~ 1e15 instead of
# treating the spread as zero.
_ROUNDING = 8 * np.finfo(float).eps

# Below 6 pairs the smallest two-sided Wilcoxon p is 2 / 2**5 = 0.0625 > 0.05.
_WILCOXON_MIN_N = 6

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
# ``compare(cautious=True)``: below this many paired seeds there is no yes or no answer.
CAUTIOUS_MIN_SEEDS = 3


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline over the seeds both were run on.

    Means, standard deviations and differences are in the metric's unit and taken over the
    paired seeds only. Standard deviations use ddof=1. ``ci_low``/``ci_high`` bound the
    mean paired difference at level ``1 - alpha``. ``t_p`` is the two-sided paired t-test
    p-value, ``None`` when it is undefined (n < 2, or all differences equal so there is no
    spread); ``wilcoxon_p`` is ``None`` when n < 6 (it could not reach p < 0.05) or all
    differences are zero; ``holm_p`` is ``t_p`` corrected across all variants compared
    together. ``verdict`` is "better", "worse", "no detectable difference" or a message
    starting "too few seeds".
    """

    variant: str
    n: int
    base_mean: float
    base_std: float
    variant_mean: float
    variant_std: float
    diff_mean: float
    ci_low: float
    ci_high: float
    t_p: float | None
    wilcoxon_p: float | None
    holm_p: float | None
    verdict: str


def paired_values(
    base: Mapping[int, float], variant: Mapping[int, float]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Seeds present in both mappings (sorted) and the aligned base and variant values.

    Seeds run for only one side are dropped: an unpaired value carries no information
    about the per-seed difference.
    """
    seeds = sorted(set(base) & set(variant))
    base_values = np.array([base[s] for s in seeds], dtype=float)
    variant_values = np.array([variant[s] for s in seeds], dtype=float)
    return seeds, base_values, variant_values


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    The k-th smallest of the m p-values is multiplied by (m - k + 1), made non-decreasing
    in that order and capped at 1, so ``adjusted < alpha`` controls the family-wise error
    rate at ``alpha``. ``None`` entries (tests that could not be run) are passed through
    and do not count towards m.
    """
    present = [(i, p) for i, p in enumerate(pvalues) if p is not None]
    for _, p in present:
        if not 0.0 <= p <= 1.0:  # also rejects nan, which would break the ordering
            raise ValueError(f"p-value {p!r} is not in [0, 1]")
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(
    n: int,
    diff_mean: float,
    holm_p: float | None,
    *,
    constant: bool = False,
    alpha: float = 0.05,
    half_width: float | None = None,
    min_seeds: int = 2,
) -> str:
    """The verdict for one variant: "better", "worse", "no detectable difference" or a
    "too few seeds ..." message.

    Fewer than ``min_seeds`` pairs (at least 2) give "too few seeds". ``constant`` says all
    paired differences are equal (zero spread, t-test undefined); then ``diff_mean`` is
    that common difference and the sign decides, given n >= 3. Otherwise, when
    ``half_width`` (of the confidence interval of the mean difference) is given and exceeds
    ``|diff_mean|``, the seeds cannot tell an effect from noise: "too few seeds". Else
    ``holm_p < alpha`` decides and the sign of ``diff_mean`` gives the direction.
    "Better" means a higher metric value.
    """
    need = max(2, min_seeds)
    if n < need:
        return f"too few seeds (n={n}): need at least {need}, better 5+"
    if constant:
        if diff_mean == 0.0:
            return NO_DIFFERENCE
        # Two equal differences are too thin to call an effect without any spread estimate.
        if n < 3:
            return (
                f"too few seeds (n={n}): both differences are equal, so there is no "
                f"spread to test; need at least 3, better 5+"
            )
        return BETTER if diff_mean > 0 else WORSE
    if half_width is not None and not half_width <= abs(diff_mean):
        return (
            f"too few seeds (n={n}): the {1 - alpha:.0%} confidence interval is wider than "
            f"the effect; add seeds"
        )
    # A missing or nan p-value is no evidence of a difference.
    if holm_p is None or not holm_p < alpha:
        return NO_DIFFERENCE
    return BETTER if diff_mean > 0 else WORSE


def compare(
    base: Mapping[int, float],
    variants: Mapping[str, Mapping[int, float]],
    alpha: float = 0.05,
    *,
    cautious: bool = False,
) -> list[Comparison]:
    """Compare each variant with the baseline over their common seeds.

    Returns one :class:`Comparison` per variant in the given order, with the t-test
    p-values Holm-corrected across all variants. ``alpha`` sets both the significance
    level and the confidence level ``1 - alpha`` of the interval. ``cautious`` (ablations)
    answers "too few seeds" rather than yes or no whenever the data cannot carry one:
    fewer than ``CAUTIOUS_MIN_SEEDS`` pairs, or an interval wider than the mean difference
    (it reaches past zero). Raises ``ValueError`` for a non-finite paired value (e.g. a
    diverged run), which would silently poison every statistic.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    partial = [_describe(name, base, values, alpha) for name, values in variants.items()]
    adjusted = holm([fields["t_p"] for fields, _ in partial])
    return [
        Comparison(
            **fields,
            holm_p=p,
            verdict=verdict(
                fields["n"],
                fields["diff_mean"],
                p,
                constant=constant,
                alpha=alpha,
                half_width=(fields["ci_high"] - fields["ci_low"]) / 2 if cautious else None,
                min_seeds=CAUTIOUS_MIN_SEEDS if cautious else 2,
            ),
        )
        for (fields, constant), p in zip(partial, adjusted)
    ]


def _describe(
    name: str, base: Mapping[int, float], variant: Mapping[int, float], alpha: float
) -> tuple[dict, bool]:
    """Every per-variant field of a Comparison except holm_p/verdict, and whether the
    paired differences are constant."""
    seeds, b, v = paired_values(base, variant)
    for seed, x, y in zip(seeds, b, v):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(
                f"variant {name!r}, seed {seed}: non-finite value (base {x}, variant {y})"
            )
    n = len(seeds)
    nan = float("nan")
    fields: dict = dict(
        variant=name,
        n=n,
        base_mean=nan,
        base_std=nan,
        variant_mean=nan,
        variant_std=nan,
        diff_mean=nan,
        ci_low=nan,
        ci_high=nan,
        t_p=None,
        wilcoxon_p=None,
    )
    if n == 0:
        return fields, False
    d = v - b
    fields.update(
        base_mean=float(b.mean()), variant_mean=float(v.mean()), diff_mean=float(d.mean())
    )
    if n < 2:
        return fields, False

    tol = _ROUNDING * float(max(np.abs(b).max(), np.abs(v).max()))
    constant = float(np.ptp(d)) <= tol
    zero = constant and abs(fields["diff_mean"]) <= tol
    if zero:
        fields["diff_mean"] = 0.0  # rounding residue, not an effect
    sem = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1)) * sem
    fields.update(
        base_std=float(b.std(ddof=1)),
        variant_std=float(v.std(ddof=1)),
        ci_low=fields["diff_mean"] - half,
        ci_high=fields["diff_mean"] + half,
    )
    # With zero spread scipy returns nan (all zero) or a meaningless t ~ 1e15 (rounding
    # residue); the verdict then goes by the sign instead, so no p-value is reported.
    if not constant:
        fields["t_p"] = float(stats.ttest_rel(v, b).pvalue)
    if n >= _WILCOXON_MIN_N and not zero:
        p = float(stats.wilcoxon(d).pvalue)
        fields["wilcoxon_p"] = p if math.isfinite(p) else None
    return fields, constant
