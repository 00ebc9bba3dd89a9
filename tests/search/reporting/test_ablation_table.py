"""The ablation table without training: hand-made outcomes whose accuracies are chosen, for
the verdicts (a yes or no only when the seeds can carry one) and each variant's changes."""

from __future__ import annotations

from search.ablation import BASELINE, AblationOutcome, RunRecord, Variant
from search.config import TrialConfig
from search.reporting.ablation_table import changes, markdown, table_rows
from search.stats import compare

BASE = TrialConfig.from_flat({"model.name": "improved_cnn", "aug.preset": "standard"})
NARROW = BASE.with_overrides({"model.width": 0.5})
VERDICT = 8  # the verdict's column in table_rows


def outcome(base: list[float], variant: list[float], config: TrialConfig = NARROW):
    """Baseline and one variant ("v") with these per-seed accuracies (seeds 0, 1, ...),
    compared as ``run_ablation`` compares them."""
    seeds = tuple(range(len(base)))

    def records(name: str, accuracies: list[float]) -> list[RunRecord]:
        return [
            RunRecord(name, s, f"{name}-{s}", False, a, 1.0, 1.0, 100, 1.0, (a, 1 - a))
            for s, a in zip(seeds, accuracies)
        ]

    comparisons = compare(dict(zip(seeds, base)), {"v": dict(zip(seeds, variant))}, cautious=True)
    return AblationOutcome(
        "a test baseline",
        "test",
        seeds,
        [Variant(BASELINE, BASE), Variant("v", config)],
        records(BASELINE, base) + records("v", variant),
        comparisons,
        ("cat", "dog"),
        "parent-run",
    )


def verdict(base: list[float], variant: list[float]) -> str:
    return {row[0]: row for row in table_rows(outcome(base, variant))}["v"][VERDICT]


def test_one_or_two_seeds_are_too_few_for_any_verdict():
    assert verdict([0.80], [0.90]) == "too few seeds (n=1): need at least 3, better 5+"
    # a clear, consistent gain on 2 seeds (t-test p < 0.05) is still no yes
    assert verdict([0.80, 0.81], [0.90, 0.92]) == "too few seeds (n=2): need at least 3, better 5+"
    # nor is a lack of difference a no
    assert verdict([0.80, 0.81], [0.80, 0.82]).startswith("too few seeds (n=2)")


def test_an_interval_wider_than_the_effect_is_too_few_seeds():
    base = [0.80, 0.81, 0.82, 0.83]
    noisy = [b + d for b, d in zip(base, [0.05, -0.04, 0.06, -0.03])]  # +1 pp, sd 5 pp
    c = outcome(base, noisy).comparisons[0]
    assert c.ci_high - c.diff_mean > abs(c.diff_mean)  # the interval reaches past zero
    assert verdict(base, noisy) == (
        "too few seeds (n=4): the 95% confidence interval is wider than the effect; add seeds"
    )


def test_a_clear_effect_on_three_seeds_gets_a_yes_or_no():
    base = [0.80, 0.81, 0.82]
    assert verdict(base, [b + d for b, d in zip(base, [0.10, 0.11, 0.12])]) == "better"
    assert verdict(base, [b - d for b, d in zip(base, [0.10, 0.11, 0.12])]) == "worse"
    # the same score on every seed: no difference, with no spread to doubt it
    assert verdict(base, base) == "no detectable difference"


def test_a_preset_toggle_shows_the_value_the_baseline_really_used():
    # the standard preset flips; the baseline leaves aug.flip unset (None)
    no_flip = BASE.with_overrides({"aug.flip": False})
    assert changes(BASE, no_flip) == "aug.flip = True -> False"
    md = markdown(outcome([0.8, 0.8, 0.8], [0.7, 0.7, 0.7], no_flip))
    assert "- **v**: aug.flip = True -> False." in md
    assert "None" not in md
    basic = BASE.with_overrides({"aug.preset": "basic"})
    assert changes(BASE, basic) == "aug.crop_padding = 4 -> 0, aug.preset = 'standard' -> 'basic'"
    # a value the baseline already trains with changes nothing
    assert changes(BASE, BASE.with_overrides({"aug.flip": True})) == (
        "same config as the baseline (aug.flip = True already)"
    )
