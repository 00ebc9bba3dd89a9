"""Error analysis of a final model (search/reporting/error_analysis.py, error_figures.py):
calibration against hand-computed and independently computed values, confused pairs and
confident mistakes on crafted inputs, the report/terminal text, JSON and valid PNGs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from search.reporting.error_analysis import (
    ConfusedPair,
    analyse,
    calibration,
    confused_pairs,
    error_lines,
    error_markdown,
    most_confident_mistakes,
    read_json,
    to_dict,
    write_json,
)
from search.reporting.error_figures import per_class_png, reliability_png, wrong_images_png


def _ece_reference(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> tuple:
    """ECE written out the textbook way (Guo et al. 2017), one bin and one sample at a time."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    per_bin = [[] for _ in range(bins)]
    for p, y in zip(probabilities, labels):
        conf = max(p)
        for b in range(bins):
            if (edges[b] < conf or b == 0) and conf <= edges[b + 1]:
                per_bin[b].append((conf, int(np.argmax(p)) == y))
                break
    total = 0.0
    for members in per_bin:
        if members:
            conf = sum(c for c, _ in members) / len(members)
            acc = sum(ok for _, ok in members) / len(members)
            total += len(members) / len(labels) * abs(acc - conf)
    return total, [len(m) for m in per_bin]


# calibration -----------------------------------------------------------------------------
def test_ece_matches_a_hand_computed_example():
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # label 0: right, confidence .90 -> bin (.8, 1]
            [0.70, 0.20, 0.10],  # label 1: wrong, .70 -> (.6, .8]
            [0.30, 0.50, 0.20],  # label 1: right, .50 -> (.4, .6]
            [0.85, 0.10, 0.05],  # label 2: wrong, .85 -> (.8, 1]
            [0.45, 0.35, 0.20],  # label 0: right, .45 -> (.4, .6]
        ]
    )
    labels = np.array([0, 1, 1, 2, 0])
    ece, bins = calibration(probs, labels, bins=5)
    # (.4,.6]: conf .475, acc 1 -> 2/5 * .525 = .21; (.6,.8]: 1/5 * .7 = .14;
    # (.8,1]: conf .875, acc .5 -> 2/5 * .375 = .15
    assert ece == pytest.approx(0.50)
    assert [b.count for b in bins] == [0, 0, 2, 1, 2]
    assert bins[2].confidence == pytest.approx(0.475) and bins[2].accuracy == 1.0
    assert bins[4].confidence == pytest.approx(0.875) and bins[4].accuracy == 0.5
    assert math.isnan(bins[0].confidence) and math.isnan(bins[0].accuracy)
    assert [(b.lower, b.upper) for b in bins][2] == pytest.approx((0.4, 0.6))


def test_bins_are_closed_on_the_right():
    # confidence exactly .5 belongs to (.25, .5]; 1.0 to the last bin
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    _, bins = calibration(probs, np.array([0, 0, 1]), bins=4)
    assert [b.count for b in bins] == [0, 1, 1, 1]


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_an_independent_implementation_on_random_data(n_bins):
    rng = np.random.default_rng(n_bins)
    logits = rng.normal(size=(2000, 10)) * rng.uniform(0.5, 4, size=(2000, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, size=2000)
    labels[:900] = probs[:900].argmax(axis=1)  # some right, some wrong
    ece, bins = calibration(probs, labels, bins=n_bins)
    expected, counts = _ece_reference(probs, labels, n_bins)
    assert ece == pytest.approx(expected, abs=1e-12)
    assert [b.count for b in bins] == counts
    assert sum(counts) == 2000


def _synthetic(n: int, accuracy_drop: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10-class predictions whose top probability p is right with probability p - drop."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 1.0, size=n)
    probs = np.tile(((1 - p) / 9)[:, None], (1, 10))
    top = rng.integers(0, 10, size=n)
    probs[np.arange(n), top] = p
    right = rng.uniform(size=n) < p - accuracy_drop
    other = (top + rng.integers(1, 10, size=n)) % 10
    return probs, np.where(right, top, other)


def test_perfectly_calibrated_predictions_have_ece_near_zero():
    ece, bins = calibration(*_synthetic(200_000, 0.0), bins=15)
    assert ece < 0.01
    for b in bins:
        if b.count > 1000:
            assert b.accuracy == pytest.approx(b.confidence, abs=0.02)


def test_overconfident_predictions_have_a_large_ece():
    ece, _ = calibration(*_synthetic(200_000, 0.3), bins=15)
    assert ece == pytest.approx(0.3, abs=0.02)


# confusions and mistakes -----------------------------------------------------------------
def test_confused_pairs_on_a_crafted_confusion_matrix():
    classes = ("a", "b", "c", "d")
    confusion = np.array(
        [
            [50, 10, 0, 0],  # a: 60 images, 10 called b (16.7%)
            [5, 80, 10, 5],  # b: 100 images, 10 called c (10%), 5 a, 5 d (5% each)
            [0, 10, 40, 0],  # c: 50 images, 10 called b (20%)
            [3, 0, 0, 7],  # d: 10 images, 3 called a (30%)
        ]
    )
    pairs = confused_pairs(confusion, classes, top=10)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [
        ("c", "b", 10),  # ties on count: by share of the true class
        ("a", "b", 10),
        ("b", "c", 10),
        ("b", "a", 5),  # same count and share: class order
        ("b", "d", 5),
        ("d", "a", 3),
    ]
    assert pairs[0] == ConfusedPair("c", "b", 10, 0.2)
    assert pairs[1].share == pytest.approx(10 / 60)
    assert confused_pairs(confusion, classes, top=2) == pairs[:2]
    assert confused_pairs(np.diag([5, 5, 5, 5]), classes) == []


def test_most_confident_mistakes_are_wrong_and_sorted_by_confidence():
    probs = np.array(
        [
            [0.99, 0.01],  # 0: right (label 0), most confident of all: not a mistake
            [0.60, 0.40],  # 1: wrong, .60
            [0.10, 0.90],  # 2: wrong, .90
            [0.30, 0.70],  # 3: right
            [0.20, 0.80],  # 4: wrong, .80
            [0.90, 0.10],  # 5: wrong, .90 (tie with 2: lower index first)
        ]
    )
    labels = np.array([0, 1, 0, 1, 0, 1])
    assert most_confident_mistakes(probs, labels, n=25).tolist() == [2, 5, 4, 1]
    assert most_confident_mistakes(probs, labels, n=2).tolist() == [2, 5]
    assert most_confident_mistakes(probs, probs.argmax(axis=1)).tolist() == []


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="labels must lie in"):
        calibration(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="columns for 2 classes"):
        analyse(np.full((2, 3), 1 / 3), np.array([0, 1]), ("a", "b"))


# the bundle, its text and JSON ----------------------------------------------------------
@pytest.fixture
def analysis():
    rng = np.random.default_rng(1)
    classes = ("plane", "car", "bird", "cat", "dog", "empty")
    labels = rng.integers(0, 5, size=400)  # "empty" has no test images
    probs = rng.dirichlet(np.full(6, 0.3), size=400)
    probs[:300, :] *= 0.2
    probs[np.arange(300), labels[:300]] += 0.8  # 75% clearly right
    cats = np.flatnonzero(labels == 3)[:30]
    probs[cats] = 0.02
    probs[cats, 4] = 0.9  # cats called dogs
    probs = probs / probs.sum(axis=1, keepdims=True)
    return analyse(probs, labels, classes), probs, labels, classes


def test_analyse_bundles_every_part(analysis):
    a, probs, labels, classes = analysis
    assert a.n_images == 400
    assert a.accuracy == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert a.ece == pytest.approx(_ece_reference(probs, labels, 15)[0])
    assert a.confused_pairs[0][:2] == ("cat", "dog")
    assert math.isnan(a.per_class_accuracy[5])
    cat = labels == 3
    assert a.per_class_accuracy[3] == pytest.approx((probs[cat].argmax(1) == 3).mean())
    assert a.mistake_indices.tolist() == most_confident_mistakes(probs, labels, 25).tolist()
    first = a.confident_mistakes[0]
    assert (first.true, first.predicted) == (
        classes[labels[first.index]],
        classes[probs[first.index].argmax()],
    )


def test_markdown_and_terminal_lines(analysis):
    a, *_ = analysis
    md = error_markdown(a, a.classes, figures={"reliability diagram": "reliability.png"})
    top = a.confused_pairs[0]
    assert "## Error analysis (test split)" in md
    assert f"| cat | dog | {top.count} | {100 * top.share:.2f}% |" in md
    assert f"ECE {100 * a.ece:.2f}% (15 bins)" in md
    worst = md.split("### Per-class accuracy, worst 5")[1]
    rows = [line.split(" | ")[0].strip("| ") for line in worst.splitlines() if "%" in line]
    assert rows[0] == "cat" and "empty" not in rows and len(rows) == 5
    assert "![reliability diagram](reliability.png)" in md
    lines = error_lines(a)
    assert lines[0].startswith(f"calibration: ECE {100 * a.ece:.2f}%")
    assert "cat -> dog" in lines[2] and len(lines) == 2 + min(5, len(a.confused_pairs))


def test_json_round_trip(analysis, tmp_path):
    a, *_ = analysis
    path = write_json(a, tmp_path / "error_analysis.json")
    data = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert data["per_class_accuracy"]["empty"] is None
    assert data["ece"] == a.ece and data["confused_pairs"][0]["true"] == "cat"
    assert to_dict(read_json(path)) == to_dict(a)


# figures ----------------------------------------------------------------------------------
def _assert_real_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_figures_are_valid_pngs_with_content(analysis, tmp_path):
    a, probs, labels, classes = analysis
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    png = wrong_images_png(images, labels, probs, a.mistake_indices, classes, tmp_path / "w.png")
    _assert_real_png(png)
    _assert_real_png(per_class_png(a.per_class_accuracy, classes, tmp_path / "pc.png"))
    _assert_real_png(reliability_png(a.bins, a.ece, tmp_path / "rel.png"))
    assert wrong_images_png(images, labels, probs, [], classes, tmp_path / "none.png") is None


def test_per_class_figure_for_100_classes_is_tall_enough_to_read(tmp_path):
    classes = tuple(f"class_{i}" for i in range(100))
    accuracy = np.random.default_rng(0).uniform(0.3, 1.0, size=100)
    png = per_class_png(accuracy, classes, tmp_path / "pc100.png")
    _assert_real_png(png)
    with Image.open(png) as image:
        assert image.size[1] >= 100 * 14  # at least ~14 px per class label
