"""ProbeResult and the accuracy helpers: bootstrap CI, per-class accuracy, confusion, split."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.probes.metrics import (
    ProbeResult,
    bootstrap_ci,
    compare_results,
    confusion_matrix,
    difference_words,
    paired_bootstrap_diff,
    per_class_accuracy,
    side_by_side,
    validation_split,
    worst_class,
)


def test_confusion_and_per_class_by_hand():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(y_true, y_pred, 4)
    expected = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert np.array_equal(cm, expected), f"rows=true, cols=pred expected, got\n{cm}"
    acc = per_class_accuracy(y_true, y_pred, 4)
    assert np.allclose(acc[:3], [0.5, 2 / 3, 1.0]), f"per-class recall wrong: {acc}"
    assert np.isnan(acc[3]), "a class with no test example must be NaN, not 0"


def test_bootstrap_ci_matches_index_resampling():
    rng = np.random.default_rng(1)
    correct = rng.random(500) < 0.7
    low, high = bootstrap_ci(correct)
    # the textbook version: resample example indices with replacement
    idx = np.random.default_rng(2).integers(0, 500, size=(4000, 500))
    ref_low, ref_high = np.quantile(correct[idx].mean(1), [0.025, 0.975])
    assert abs(low - ref_low) < 0.01 and abs(high - ref_high) < 0.01, (
        f"binomial shortcut ({low:.3f}, {high:.3f}) vs index bootstrap ({ref_low:.3f}, {ref_high:.3f})"
    )
    assert low < correct.mean() < high, "the CI must contain the point estimate"
    assert bootstrap_ci(correct) == (low, high), "the CI must be deterministic (fixed seed)"
    wide = bootstrap_ci(correct[:50])
    assert wide[1] - wide[0] > high - low, "fewer test examples must give a wider interval"


def test_probe_result_from_predictions_and_summary():
    y_true = np.array([0, 1, 2, 2, 1, 0, 0, 2])
    y_pred = np.array([0, 1, 2, 1, 1, 0, 2, 2])
    res = ProbeResult.from_predictions("linear", y_true, y_pred, 3, {"reg": 1e-3, "by": {1: 2}})
    assert res.top1 == pytest.approx(6 / 8), f"top1 should be 6/8, got {res.top1}"
    assert res.ci_low <= res.top1 <= res.ci_high, "CI must bracket top1"
    assert res.confusion.sum() == 8 and res.confusion.shape == (3, 3), "confusion counts all rows"
    assert res.predictions.dtype == np.int64, "predictions are int64"
    summary = res.summary()
    assert summary["reg"] == 1e-3 and "by" not in summary, f"summary keeps scalars only: {summary}"
    assert summary["n_test"] == 8, f"n_test wrong: {summary}"


def test_from_predictions_rejects_mismatched_shapes():
    with pytest.raises(ExplorerError, match="differ in shape"):
        ProbeResult.from_predictions("x", np.zeros(3), np.zeros(4))


def test_validation_split_keeps_class_balance():
    y = np.repeat([0, 1, 2], [100, 50, 10])
    fit, val = validation_split(y, 0.1, seed=0)
    assert len(np.intersect1d(fit, val)) == 0, "fit and val must be disjoint"
    assert len(fit) + len(val) == len(y), "every row must be in fit or val"
    counts = np.bincount(y[val], minlength=3)
    assert counts.tolist() == [10, 5, 1], f"10% of each class expected in val, got {counts}"
    fit2, val2 = validation_split(y, 0.1, seed=0)
    assert np.array_equal(val, val2), "the split must be deterministic in the seed"
    assert not np.array_equal(val, validation_split(y, 0.1, seed=1)[1]), "seed must matter"


def _pair(
    n: int, acc_a: float, acc_b: float, agree: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated correctness vectors: B copies A on a fraction `agree` of the images."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < acc_a
    b = np.where(rng.random(n) < agree, a, rng.random(n) < acc_b)
    return a, b


def test_paired_bootstrap_matches_index_resampling():
    a, b = _pair(2000, 0.85, 0.80, 0.7, seed=3)
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=20000)
    assert diff == pytest.approx(a.mean() - b.mean()), "the point estimate is the plain difference"
    # the textbook version: resample image indices with replacement, keeping each pair
    idx = np.random.default_rng(4).integers(0, a.size, size=(4000, a.size))
    ref = a[idx].mean(1) - b[idx].mean(1)
    ref_low, ref_high = np.quantile(ref, [0.025, 0.975])
    assert abs(low - ref_low) < 0.004 and abs(high - ref_high) < 0.004, (
        f"multinomial shortcut ({low:.4f}, {high:.4f}) vs index bootstrap ({ref_low:.4f}, {ref_high:.4f})"
    )
    assert paired_bootstrap_diff(a, b) == paired_bootstrap_diff(a, b), "deterministic (fixed seed)"


def test_paired_bootstrap_excludes_zero_for_a_real_gap():
    a, b = _pair(10000, 0.87, 0.82, 0.6, seed=5)
    diff, low, high = paired_bootstrap_diff(a, b)
    assert diff > 0.01 and 0 < low < diff < high, (
        f"a ~2-point gap on 10k images is real: {low}, {high}"
    )
    assert "excludes 0" in difference_words(diff, low, high, "A", "B")
    assert "better" in difference_words(diff, low, high, "A", "B")
    d2, l2, h2 = paired_bootstrap_diff(b, a)
    assert d2 == pytest.approx(-diff) and h2 < 0, "swapping the sides flips the sign"
    assert "worse" in difference_words(d2, l2, h2, "B", "A")


def test_paired_bootstrap_includes_zero_within_noise():
    # 83.21% vs 82.46% on 10,000 images with unrelated errors: the README's old "beats pixels"
    rng = np.random.default_rng(6)
    a = np.zeros(10000, dtype=bool)
    a[rng.permutation(10000)[:8321]] = True
    b = np.zeros(10000, dtype=bool)
    b[rng.permutation(10000)[:8246]] = True
    diff, low, high = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(0.0075)
    assert low < 0 < high, (
        f"a 0.75-point gap with independent errors is within noise: [{low}, {high}]"
    )
    assert "within noise" in difference_words(diff, low, high, "random", "pixels")


def test_paired_bootstrap_identical_and_errors():
    a = np.array([True, False, True, True])
    assert paired_bootstrap_diff(a, a) == (0.0, 0.0, 0.0), "identical results differ by exactly 0"
    assert all(np.isnan(paired_bootstrap_diff(a[:0], a[:0])))
    with pytest.raises(ExplorerError, match="same test images"):
        paired_bootstrap_diff(a, a[:3])


def test_compare_results_pairs_predictions_on_labels():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1] * 50)
    pa = y.copy()
    pb = y.copy()
    pb[:80] = (pb[:80] + 1) % 3  # B is wrong on 80 images where A is right
    ra = ProbeResult.from_predictions("linear", y, pa, 3)
    rb = ProbeResult.from_predictions("linear", y, pb, 3)
    d = compare_results(rb, ra, y)
    assert d.diff == pytest.approx(-0.2) and d.significant and d.high < 0
    assert "B is worse than A" in d.words("B", "A")
    same = compare_results(ra, ra, y)
    assert not same.significant and "within noise" in same.words()
    with pytest.raises(ExplorerError, match="cannot be paired"):
        compare_results(ra, rb, y[:10])


def test_side_by_side_numbers_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2] * 20)
    pa = y.copy()
    pa[y == 2] = 0  # A never gets class 2
    pb = y.copy()
    pb[(y == 0)] = 1  # B never gets class 0, but gets class 2
    ra = ProbeResult.from_predictions("linear", y, pa, 3)
    rb = ProbeResult.from_predictions("linear", y, pb, 3)
    c = side_by_side(ra, rb, y, ["a", "b", "c"])
    assert worst_class(ra) == 0.0 and worst_class(rb) == 0.0
    assert c.top1_delta == pytest.approx(0.0) and c.worst_delta == 0.0
    assert c.classes_better == 1, "only class 2 is better in B (class 1 ties, class 0 is worse)"
    assert c.paired.diff == pytest.approx(0.0), "paired is B - A"
    s = c.summary_table().set_index("metric")
    assert list(s.index) == [
        "top1",
        "ci_low",
        "ci_high",
        "worst_class",
        "paired_low",
        "paired_high",
    ]
    assert s.loc["top1", "A"] == pytest.approx(2 / 3) and s.loc["top1", "B - A"] == pytest.approx(0)
    assert s.loc["paired_low", "B - A"] == c.paired.low and np.isnan(s.loc["paired_low", "A"])
    p = c.per_class_table()
    assert list(p["class"]) == ["a", "b", "c"]
    assert list(p["B - A"]) == [-1.0, 0.0, 1.0]


def test_side_by_side_with_an_absent_class():
    y = np.array([0, 1] * 10)
    ra = ProbeResult.from_predictions("linear", y, np.zeros_like(y), 3)  # class 2 has no test image
    rb = ProbeResult.from_predictions("linear", y, y, 3)
    c = side_by_side(ra, rb, y, [0, 1, 2])
    assert c.classes_better == 1 and c.worst_delta == pytest.approx(100.0)
    assert c.top1_delta == pytest.approx(50.0) and c.paired.significant
    assert c.classes == ["0", "1", "2"]


def test_per_class_predictions_and_confused_tables():
    from explorer.probes.metrics import confused_positions, per_class_table, predictions_table

    y = np.array([0, 0, 1, 1, 1, 2])
    r = ProbeResult.from_predictions("linear", y, np.array([0, 1, 1, 0, 0, 2]), 3)
    t = per_class_table(r, ["a", "b", "c"])
    assert list(t["support"]) == [2, 3, 1] and list(t["accuracy"]) == pytest.approx(
        [0.5, 1 / 3, 1.0]
    )
    p = predictions_table(r, y, np.array([10, 11, 12, 13, 14, 15]), ["a", "b", "c"])
    assert list(p["dataset_index"]) == [10, 11, 12, 13, 14, 15]
    assert list(p["true"]) == ["a", "a", "b", "b", "b", "c"]
    assert list(p["predicted"]) == ["a", "b", "b", "a", "a", "c"]
    assert confused_positions(r, y, 1, 0, 12).tolist() == [3, 4]
    assert (
        confused_positions(r, y, 1, 0, 1).tolist() == [3]
        and confused_positions(r, y, 2, 0, 5).size == 0
    )
