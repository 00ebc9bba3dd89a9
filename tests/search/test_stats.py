from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from search.stats import Comparison, compare, holm, paired_values, verdict

# A nan or a precision warning escaping from scipy is a bug here, not noise.
pytestmark = pytest.mark.filterwarnings("error")

BASE = [0.912, 0.905, 0.918, 0.909, 0.914, 0.907, 0.916, 0.911]
VARIANT = [0.921, 0.903, 0.925, 0.917, 0.913, 0.915, 0.924, 0.912]


def by_seed(values: list[float], seeds: list[int] | None = None) -> dict[int, float]:
    return dict(zip(seeds if seeds is not None else range(len(values)), values))


def one(base: dict[int, float], variant: dict[int, float], alpha: float = 0.05) -> Comparison:
    [c] = compare(base, {"v": variant}, alpha=alpha)
    return c


def noise(seed: int, n: int, sd: float = 0.004) -> np.ndarray:
    return 0.91 + np.random.default_rng(seed).normal(0.0, sd, n)


def test_paired_values_keeps_common_seeds_sorted_and_aligned():
    seeds, b, v = paired_values({7: 0.7, 1: 0.1, 3: 0.3, 9: 0.9}, {3: 1.3, 8: 1.8, 1: 1.1, 7: 1.7})
    assert seeds == [1, 3, 7]
    np.testing.assert_array_equal(b, [0.1, 0.3, 0.7])
    np.testing.assert_array_equal(v, [1.1, 1.3, 1.7])


def test_numbers_match_scipy():
    b, v = np.array(BASE), np.array(VARIANT)
    d = v - b
    # Insertion order differs between the two mappings: pairing must go by seed, not position.
    c = one(by_seed(BASE), dict(reversed(list(by_seed(VARIANT).items()))))
    assert c.variant == "v" and c.n == 8
    assert c.base_mean == pytest.approx(b.mean(), abs=1e-15)
    assert c.variant_mean == pytest.approx(v.mean(), abs=1e-15)
    assert c.base_std == pytest.approx(np.std(b, ddof=1), rel=1e-12)
    assert c.variant_std == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    assert c.diff_mean == pytest.approx(d.mean(), abs=1e-15)
    low, high = stats.t.interval(0.95, 7, loc=d.mean(), scale=stats.sem(d))
    assert (c.ci_low, c.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert c.t_p == pytest.approx(stats.ttest_rel(v, b).pvalue, rel=1e-12)
    assert c.wilcoxon_p == pytest.approx(stats.wilcoxon(v - b).pvalue, rel=1e-12)
    assert c.holm_p == c.t_p  # a single variant: nothing to correct
    assert c.t_p < 0.05 and c.verdict == "better"


def test_alpha_sets_the_confidence_level():
    b, v = np.array(BASE), np.array(VARIANT)
    d = v - b
    c = one(by_seed(BASE), by_seed(VARIANT), alpha=0.2)
    low, high = stats.t.interval(0.8, 7, loc=d.mean(), scale=stats.sem(d))
    assert (c.ci_low, c.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_wilcoxon_only_from_six_pairs():
    five = one(by_seed(BASE[:5]), by_seed(VARIANT[:5]))
    assert five.wilcoxon_p is None and five.t_p is not None
    six = one(by_seed(BASE[:6]), by_seed(VARIANT[:6]))
    d = np.array(VARIANT[:6]) - np.array(BASE[:6])
    assert six.wilcoxon_p == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)


def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_none():
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    adjusted = holm([0.01, None, 0.04])  # m = 2, not 3
    assert adjusted[1] is None
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert holm([]) == [] and holm([None]) == [None]


def test_holm_is_monotone_and_never_below_raw():
    raw = list(np.random.default_rng(3).uniform(0.0, 0.2, 12))
    adjusted = holm(raw)
    order = np.argsort(raw)
    assert all(adjusted[i] <= adjusted[j] for i, j in zip(order, order[1:]))
    assert all(p <= a <= 1.0 for p, a in zip(raw, adjusted))


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_holm_rejects_invalid_pvalues(bad):
    with pytest.raises(ValueError):
        holm([0.01, bad])


@pytest.mark.parametrize("shift, expected", [(-0.05, "worse"), (0.05, "better")])
def test_clear_effect(shift, expected):
    base = noise(0, 5)
    variant = base + shift + np.random.default_rng(1).normal(0.0, 0.001, 5)
    c = one(by_seed(list(base)), by_seed(list(variant)))
    assert c.verdict == expected
    assert (c.ci_low > 0) == (shift > 0) and (c.ci_high < 0) == (shift < 0)


def test_no_effect_from_noise_alone():
    # Same distribution for both; the draw is fixed so the outcome is deterministic.
    c = one(by_seed(list(noise(1, 8))), by_seed(list(noise(11, 8))))
    assert c.t_p > 0.05
    assert c.ci_low < 0 < c.ci_high
    assert c.verdict == "no detectable difference"


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_seeds(n):
    c = one(by_seed([0.9] * n), by_seed([0.99] * n))
    assert c.n == n
    assert c.verdict == f"too few seeds (n={n}): need at least 2, better 5+"
    assert c.t_p is None and c.wilcoxon_p is None and c.holm_p is None
    assert math.isnan(c.base_std) and math.isnan(c.ci_low) and math.isnan(c.ci_high)


def test_identical_runs_are_no_difference():
    c = one(by_seed(BASE), by_seed(BASE))
    assert c.verdict == "no detectable difference"
    assert c.diff_mean == 0.0 and c.ci_low == 0.0 and c.ci_high == 0.0
    assert c.t_p is None and c.wilcoxon_p is None and c.holm_p is None


@pytest.mark.parametrize("shift, expected", [(0.01, "better"), (-0.01, "worse")])
def test_constant_nonzero_difference_decided_by_sign(shift, expected):
    base = BASE[:3]
    c = one(by_seed(base), by_seed([x + shift for x in base]))
    assert c.verdict == expected
    assert c.t_p is None and c.holm_p is None


def test_constant_difference_with_two_seeds_is_too_few():
    c = one(by_seed([0.90, 0.92]), by_seed([0.91, 0.93]))
    assert c.verdict.startswith("too few seeds (n=2)")


def test_rounding_residue_counts_as_constant():
    # 0.9 - 1.0 and 1.9 - 2.0 differ in the last bits; scipy alone would report p ~ 1e-31.
    c = one(by_seed([1.0, 2.0, 3.0]), by_seed([0.9, 1.9, 2.9]))
    assert c.t_p is None
    assert c.verdict == "worse"
    assert c.diff_mean == pytest.approx(-0.1)


def test_rounding_residue_around_zero_counts_as_no_difference():
    # 0.1 + 0.2 != 0.3 in floating point, but the runs scored the same.
    c = one(by_seed([0.3, 0.6, 0.9]), by_seed([0.1 + 0.2, 0.2 + 0.4, 0.4 + 0.5]))
    assert c.verdict == "no detectable difference"
    assert c.diff_mean == 0.0 and c.t_p is None


def test_constant_difference_still_gets_wilcoxon():
    base = BASE[:6]
    c = one(by_seed(base), by_seed([x + 0.01 for x in base]))
    assert c.wilcoxon_p == pytest.approx(2 / 2**6)
    assert c.verdict == "better"


def test_only_common_seeds_are_paired():
    base = by_seed([0.90, 0.91, 0.92, 0.93, 0.94, 0.95], seeds=[0, 1, 2, 3, 4, 5])
    variant = by_seed([0.50, 0.96, 0.90, 0.97, 0.60, 0.70], seeds=[3, 4, 2, 5, 8, 9])
    c = one(base, variant)
    assert c.n == 4
    assert c.base_mean == pytest.approx(np.mean([0.92, 0.93, 0.94, 0.95]))
    assert c.variant_mean == pytest.approx(np.mean([0.90, 0.50, 0.96, 0.97]))
    d = np.array([0.90, 0.50, 0.96, 0.97]) - np.array([0.92, 0.93, 0.94, 0.95])
    assert c.diff_mean == pytest.approx(d.mean())


def test_no_common_seeds():
    c = one(by_seed([0.9, 0.91], seeds=[0, 1]), by_seed([0.95, 0.96], seeds=[2, 3]))
    assert c.n == 0 and math.isnan(c.diff_mean)
    assert c.verdict.startswith("too few seeds (n=0)")


def test_holm_makes_a_marginal_effect_undetectable_among_many_variants():
    base = by_seed(BASE[:5])
    marginal = by_seed([b + d for b, d in zip(BASE[:5], [0.006, 0.002, 0.004, 0.000, 0.005])])
    [alone] = compare(base, {"se": marginal})
    assert alone.t_p < 0.05 and alone.verdict == "better"

    nulls = {f"null{k}": by_seed(list(noise(20 + k, 5))) for k in range(4)}
    results = compare(base, {"se": marginal, **nulls})
    assert [c.variant for c in results] == ["se", "null0", "null1", "null2", "null3"]
    se = results[0]
    assert se.t_p == alone.t_p and se.t_p < 0.05
    assert se.holm_p >= 0.05
    assert se.verdict == "no detectable difference"
    assert [c.holm_p for c in results] == pytest.approx(holm([c.t_p for c in results]))


def test_holm_ignores_variants_without_a_test():
    base = by_seed(BASE)
    results = compare(base, {"real": by_seed(VARIANT), "one_seed": {0: 0.99}})
    assert results[1].holm_p is None
    assert results[0].holm_p == results[0].t_p  # m = 1


def test_verdict_on_constructed_cases():
    assert verdict(5, 0.01, 0.01) == "better"
    assert verdict(5, -0.01, 0.01) == "worse"
    assert verdict(5, 0.01, 0.05) == "no detectable difference"  # strictly below alpha
    assert verdict(5, 0.01, 0.2) == "no detectable difference"
    assert verdict(5, 0.01, 0.08, alpha=0.1) == "better"
    assert verdict(5, 0.01, None) == "no detectable difference"
    assert verdict(5, 0.01, float("nan")) == "no detectable difference"
    assert verdict(1, 0.5, 0.0) == "too few seeds (n=1): need at least 2, better 5+"
    assert verdict(3, 0.0, None, constant=True) == "no detectable difference"
    assert verdict(3, 0.02, None, constant=True) == "better"
    assert verdict(3, -0.02, None, constant=True) == "worse"
    assert verdict(2, 0.02, None, constant=True).startswith("too few seeds (n=2)")
    assert verdict(2, 0.0, None, constant=True) == "no detectable difference"


def test_non_finite_value_is_rejected():
    with pytest.raises(ValueError, match="seed 2"):
        compare(by_seed(BASE), {"diverged": {**by_seed(VARIANT), 2: float("nan")}})


def test_unpaired_non_finite_value_is_ignored():
    c = one(by_seed(BASE), {**by_seed(VARIANT), 99: float("nan")})
    assert c.n == 8


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.05])
def test_invalid_alpha(alpha):
    with pytest.raises(ValueError):
        compare(by_seed(BASE), {"v": by_seed(VARIANT)}, alpha=alpha)


def test_no_variants():
    assert compare(by_seed(BASE), {}) == []
