"""patchworld.evaluation.statistics: bootstrap intervals that cover the truth, paired differences, matched sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patchworld.evaluation.statistics import (
    Estimate,
    accuracy_estimate,
    bootstrap,
    label,
    paired_difference,
    physics_difference,
    physics_estimates,
    relative_accuracy,
)
from patchworld.evaluation.statistics import auroc

IMPOSSIBLE = np.array([True, True, False, False])  # K = 4 clips per matched set: 2 impossible, 2 possible


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def matched_sets(rng, sets: int, mu: float) -> np.ndarray:
    """(sets, 4) surprise: impossible clips ~ N(mu, 1), possible ones ~ N(0, 1)."""
    return rng.normal(size=(sets, len(IMPOSSIBLE))) + mu * IMPOSSIBLE


# ------------------------------------------------------------------------------------------------ coverage


def test_accuracy_interval_covers_the_true_accuracy():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        correct = rng.random(256) < 0.7
        estimate = accuracy_estimate(correct, resamples=400, seed=trial)
        covered += estimate.low <= 0.7 <= estimate.high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_physics_intervals_cover_the_true_relative_accuracy_and_auroc():
    mu = 1.0
    truth = phi(mu / math.sqrt(2.0))  # P(N(mu, 1) > N(0, 1)), for pairs within a set and pooled alike
    rng = np.random.default_rng(1)
    covered = {"relative_accuracy": 0, "auroc": 0}
    for trial in range(200):
        estimates = physics_estimates(matched_sets(rng, 64, mu), IMPOSSIBLE, resamples=400, seed=trial)
        for name, estimate in estimates.items():
            covered[name] += estimate.low <= truth <= estimate.high
    for name, count in covered.items():
        assert 0.88 <= count / 200 <= 0.99, (name, count)


def test_paired_difference_interval_covers_the_true_difference():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(200):
        u = rng.random(256)  # clip difficulty shared by both models: the pairing
        a, b = u < 0.75, u < 0.65  # true difference 0.10
        covered += (e := paired_difference(a, b, resamples=400, seed=trial)).low <= 0.10 <= e.high
    assert 0.88 <= covered / 200 <= 0.99, covered


# --------------------------------------------------------------------------------------- matched sets


def test_the_true_impossibility_as_score_is_perfect_and_random_scores_are_chance():
    rng = np.random.default_rng(3)
    impossible = np.tile(IMPOSSIBLE, (50, 1))
    perfect = impossible.astype(float)
    assert relative_accuracy(perfect, impossible) == 1.0
    for estimate in physics_estimates(perfect, impossible, resamples=500).values():
        assert (estimate.value, estimate.low, estimate.high) == (1.0, 1.0, 1.0)

    random = rng.normal(size=(100, 4))
    for name, estimate in physics_estimates(random, IMPOSSIBLE, resamples=500).items():
        assert abs(estimate.value - 0.5) < 0.1, (name, estimate)
        assert estimate.low <= 0.5 <= estimate.high, (name, estimate)
        assert estimate.high - estimate.low > 0.05


def test_ties_count_one_half():
    constant = np.full((30, 4), 3.0)
    assert relative_accuracy(constant, IMPOSSIBLE) == 0.5
    for estimate in physics_estimates(constant, IMPOSSIBLE, resamples=200).values():
        assert (estimate.value, estimate.low, estimate.high) == (0.5, 0.5, 0.5)
    # one set: impossible {2, 1} vs possible {1, 0}: 2>1, 2>0, 1=1 (1/2), 1>0 -> 3.5 of 4 pairs
    assert relative_accuracy([[2.0, 1.0, 1.0, 0.0]], IMPOSSIBLE) == 0.875


def test_relative_accuracy_is_per_set_and_impossible_may_differ_between_sets():
    scores = np.array([[5.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    impossible = np.array([[True, False, False], [False, True, True]])
    # set 0: 5 > 0 and 5 > 1 -> 1.0; set 1: 1 > 0 and 2 > 0 -> 1.0 -- although pooled, 0 and 1 overlap
    assert relative_accuracy(scores, impossible) == 1.0
    assert physics_estimates(scores, impossible, resamples=100)["auroc"].value == auroc(scores, impossible) < 1.0


def test_auroc_weights_count_items_as_repeats_and_rows_give_one_auroc_each():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8, 0.4]), np.array([0, 0, 1, 1, 1])
    weights = np.array([[1, 1, 1, 1, 1], [2, 0, 1, 3, 1], [0, 1, 0, 0, 1]])
    rows = auroc(scores, labels, weights)
    repeated = [auroc(np.repeat(scores, w), np.repeat(labels, w)) for w in weights]
    assert rows.shape == (3,) and rows == pytest.approx(repeated, abs=1e-12)
    assert auroc(scores, labels, weights[1]) == pytest.approx(repeated[1], abs=1e-12)
    assert rows[2] == 0.5  # one positive tied with the only negative


def test_physics_difference_is_paired_over_sets():
    rng = np.random.default_rng(4)
    noise = matched_sets(rng, 80, 0.0)
    good, bad = noise + 2.0 * IMPOSSIBLE, noise + 0.2 * IMPOSSIBLE  # the same clips, the same noise
    difference = physics_difference(good, bad, IMPOSSIBLE, resamples=1000)
    assert difference.value == pytest.approx(relative_accuracy(good, IMPOSSIBLE) - relative_accuracy(bad, IMPOSSIBLE))
    assert label(difference) == "resolved" and difference.low > 0
    same = physics_difference(good, good.copy(), IMPOSSIBLE, resamples=1000)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and label(same) == "within noise"


# ----------------------------------------------------------------------------------- paired accuracies


def test_identical_models_differ_by_exactly_zero():
    correct = np.random.default_rng(5).random((3, 256)) < 0.7
    difference = paired_difference(correct, correct.copy())
    assert (difference.value, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert not difference.resolved() and label(difference) == "within noise"


def test_ninety_versus_fifty_percent_is_resolved():
    rng = np.random.default_rng(6)
    a = rng.permutation(np.arange(256) < 230)  # 90%
    b = rng.permutation(np.arange(256) < 128)  # 50%
    difference = paired_difference(a, b)
    assert difference.value == pytest.approx(230 / 256 - 0.5)
    assert difference.resolved() and label(difference) == "resolved"


def test_pairing_narrows_the_interval_of_correlated_models():
    rng = np.random.default_rng(7)
    a = np.tile(rng.random(256) < 0.7, (3, 1))  # three probe seeds that agree
    b = a.copy()
    b[:, np.flatnonzero(~a[0])[:6]] = True  # b is a, right on 6 more clips
    paired = paired_difference(b, a, resamples=1000)
    assert paired.value == pytest.approx(6 / 256)
    # the unpaired bootstrap: each model's clips resampled independently
    draws = np.random.default_rng(8)
    unpaired = np.array(
        [b.mean(0)[draws.integers(0, 256, 256)].mean() - a.mean(0)[draws.integers(0, 256, 256)].mean() for _ in range(1000)]
    )
    unpaired_low, unpaired_high = np.quantile(unpaired, [0.025, 0.975])
    assert paired.high - paired.low < (unpaired_high - unpaired_low) / 2
    assert paired.resolved()  # 6 clips better, none worse: real when paired
    assert unpaired_low < 0 < unpaired_high  # but lost in the noise of the clip sample when unpaired


def test_accuracy_averages_seeds_inside_and_resamples_clips():
    correct = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    estimate = accuracy_estimate(correct, resamples=300)
    assert estimate.value == 3 / 8
    # the same as bootstrapping the per-clip seed average
    generic = bootstrap(np.mean, correct.mean(axis=0), resamples=300)
    assert estimate.as_dict() == pytest.approx(generic.as_dict(), abs=1e-12)
    assert accuracy_estimate(np.ones((2, 50), bool)) == Estimate(1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------- the resampler


def test_bootstrap_resamples_units_jointly_and_constant_data_is_degenerate():
    x = np.arange(10.0)
    calls = []

    def statistic(a, b):  # rows are resampled together: the pairs (x, 2x) stay intact
        assert a.shape == b.shape == (10,) and np.array_equal(b, 2 * a)
        calls.append(a)
        return float(a.mean())

    estimate = bootstrap(statistic, x, 2 * x, resamples=50)
    assert len(calls) == 51 and estimate.value == 4.5  # the original arrays, then one call per resample
    assert any(len(np.unique(a)) < 10 for a in calls[1:])  # drawn with replacement
    constant = bootstrap(np.mean, np.full(40, 0.7), resamples=500)
    assert constant.value == constant.low == constant.high == 0.7
    estimate = bootstrap(np.median, np.random.default_rng(9).normal(size=101), resamples=500)
    assert estimate.low < estimate.value < estimate.high


def test_the_same_seed_gives_the_same_interval():
    rng = np.random.default_rng(10)
    correct, scores = rng.random((3, 256)) < 0.7, matched_sets(rng, 40, 0.5)
    assert accuracy_estimate(correct, seed=3) == accuracy_estimate(correct, seed=3)
    assert physics_estimates(scores, IMPOSSIBLE, seed=3) == physics_estimates(scores, IMPOSSIBLE, seed=3)
    assert bootstrap(np.mean, correct[0], seed=3) == bootstrap(np.mean, correct[0], seed=3)
    assert accuracy_estimate(correct, seed=3) != accuracy_estimate(correct, seed=4)


def test_level_widens_the_interval():
    correct = np.random.default_rng(11).random(256) < 0.7
    narrow, wide = accuracy_estimate(correct, level=0.5), accuracy_estimate(correct, level=0.99)
    assert wide.low < narrow.low < narrow.value < narrow.high < wide.high


def test_torch_tensors_are_accepted():
    rng = np.random.default_rng(12)
    correct, scores = rng.random((2, 64)) < 0.7, matched_sets(rng, 20, 1.0)
    assert accuracy_estimate(torch.from_numpy(correct)) == accuracy_estimate(correct)
    assert physics_estimates(torch.from_numpy(scores), torch.from_numpy(IMPOSSIBLE)) == physics_estimates(scores, IMPOSSIBLE)


def test_estimate_resolved_and_as_dict():
    estimate = Estimate(0.3, 0.1, 0.5)
    assert estimate.resolved() and not estimate.resolved(0.2) and estimate.resolved(0.6)
    assert estimate.as_dict() == {"value": 0.3, "low": 0.1, "high": 0.5}
    assert label(Estimate(0.1, -0.05, 0.2)) == "within noise" and label(Estimate(-0.1, -0.2, -0.01)) == "resolved"


# ------------------------------------------------------------------------------------------- bad input


def test_mismatched_shapes_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 256\).*\(3, 200\)"):
        paired_difference(np.ones((3, 256)), np.ones((3, 200)))
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(10, 5\)"):
        physics_difference(np.zeros((10, 4)), np.zeros((10, 5)), IMPOSSIBLE)
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(5,\)"):
        physics_estimates(np.zeros((10, 4)), np.array([1, 1, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"\(10,\).*\(9,\)"):
        bootstrap(lambda a, b: 0.0, np.zeros(10), np.zeros(9))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        accuracy_estimate(np.ones((2, 3, 4)))


def test_sets_without_both_kinds_of_clip_are_refused():
    scores = np.zeros((5, 4))
    impossible = np.tile(IMPOSSIBLE, (5, 1))
    impossible[2] = False
    with pytest.raises(ValueError, match=r"no impossible clip: \[2\]"):
        relative_accuracy(scores, impossible)
    impossible[2], impossible[4] = True, True
    with pytest.raises(ValueError, match=r"no possible clip: \[2, 4\]"):
        physics_estimates(scores, impossible)
    with pytest.raises(ValueError, match="no possible clip"):
        physics_difference(scores, scores, np.ones(4, bool))


def test_other_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        accuracy_estimate(np.array([0.0, 1.5, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        relative_accuracy(np.array([[np.nan, 0.0, 1.0, 2.0]]), IMPOSSIBLE)
    with pytest.raises(ValueError, match="resamples"):
        accuracy_estimate(np.ones(5), resamples=0)
    with pytest.raises(ValueError, match="level"):
        accuracy_estimate(np.ones(5), level=95)


def test_batched_intervals_match_the_generic_bootstrap_of_the_same_statistic():
    """The batched resamples of physics_estimates are those bootstrap draws for the same seed: the pooled
    AUROC interval equals bootstrapping `patchworld.evaluation.statistics.auroc` over sets, one call per resample."""
    rng = np.random.default_rng(14)
    scores, impossible = matched_sets(rng, 30, 0.7), np.tile(IMPOSSIBLE, (30, 1))
    batched = physics_estimates(scores, impossible, resamples=300, seed=5)
    generic_auroc = bootstrap(auroc, scores, impossible, resamples=300, seed=5)
    generic_relative = bootstrap(relative_accuracy, scores, impossible, resamples=300, seed=5)
    assert batched["auroc"].as_dict() == pytest.approx(generic_auroc.as_dict(), abs=1e-12)
    assert batched["relative_accuracy"].as_dict() == pytest.approx(generic_relative.as_dict(), abs=1e-12)
