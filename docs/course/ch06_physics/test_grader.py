"""Grader for chapter 6: your relative accuracy and bootstrap against `framework/evaluation/statistics.py`
(on synthetic scores and on the raw-pixel baseline's surprise over real matched sets), and your attentive
pooling inside the real `AttentiveProbe`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from patchworld.data.matched import matched_sets
from patchworld.evaluation import statistics
from patchworld.evaluation.contestants import PixelFeatures
from patchworld.evaluation.physics import clip_scores
from patchworld.evaluation.probes import AttentiveProbe


def test_relative_accuracy_matches_the_framework(exercises):
    rng = np.random.default_rng(0)
    impossible = np.array([False, False, True, True])
    for scores in (rng.normal(size=(20, 4)), rng.integers(0, 3, size=(20, 4)).astype(float)):  # the second has ties
        yours = exercises.relative_accuracy(scores, np.broadcast_to(impossible, scores.shape))
        expected = statistics.relative_accuracy(scores, impossible)
        assert isinstance(yours, float), f"relative_accuracy must return a float, got {type(yours).__name__}"
        assert yours == pytest.approx(expected, abs=1e-9), (
            f"relative accuracy {yours:.4f}, the framework's {expected:.4f}; count every (impossible, possible) pair of "
            "a set, ties as 1/2")


def test_relative_accuracy_compares_within_sets_and_averages_sets(exercises):
    # set 0: 1 impossible vs 3 possible, right 3 of 3 pairs; set 1: 2 vs 2, right 1 of 4 pairs; set 1 is far louder
    scores = np.array([[0.0, 1.0, 2.0, 5.0], [100.0, 103.0, 102.0, 101.0]])
    impossible = np.array([[False, False, False, True], [True, True, False, False]])
    yours = exercises.relative_accuracy(scores, impossible)
    expected = statistics.relative_accuracy(scores, impossible)  # (1 + 0.5) / 2 = 0.75
    assert yours == pytest.approx(expected), (
        f"got {yours:.4f}, expected {expected:.4f} = the mean over sets of each set's share of pairs won. Pooling every "
        "pair gives (3 + 2) / 7; comparing clips of different sets mixes scenes (set 1's clips are all louder)")


def test_relative_accuracy_on_real_matched_sets(exercises):
    sets = matched_sets(("continuity", "permanence"), sets_per_violation=2, frames=8, size=(32, 32))
    surprise = PixelFeatures((2, 8, 8)).surprise(torch.cat([s.videos for s in sets]), context=4)  # (S*4, T) copy-last-frame
    scores = clip_scores(surprise, "max").view(len(sets), -1).numpy()  # (S, 4)
    impossible = np.stack([s.impossible.numpy() for s in sets])
    yours = exercises.relative_accuracy(scores, impossible)
    assert yours == pytest.approx(statistics.relative_accuracy(scores, impossible)), (
        "on the raw-pixel baseline's surprise over real matched sets your relative accuracy differs from the framework's")


def test_bootstrap_ci_matches_the_framework(exercises):
    values = np.random.default_rng(1).uniform(size=48)  # e.g. 48 sets' relative accuracies
    out = exercises.bootstrap_ci(values, resamples=2000, level=0.95, seed=0)
    assert isinstance(out, tuple) and len(out) == 3, "bootstrap_ci must return (mean, low, high)"
    mean, low, high = out
    real = statistics.bootstrap(np.mean, values, resamples=2000, level=0.95, seed=0)
    assert mean == pytest.approx(values.mean()), "the first value must be the mean of the values themselves"
    assert low == pytest.approx(real.low, abs=0.015) and high == pytest.approx(real.high, abs=0.015), (
        f"your 95% interval [{low:.3f}, {high:.3f}], the framework's [{real.low:.3f}, {real.high:.3f}]: resample the "
        "units with replacement, take each resample's mean, and the 2.5% and 97.5% quantiles of those means")


def test_bootstrap_ci_behaves(exercises):
    assert exercises.bootstrap_ci([0.5] * 10) == pytest.approx((0.5, 0.5, 0.5)), (
        "constant values must give low == high == the value")
    values = np.random.default_rng(2).normal(size=400)
    a, b = exercises.bootstrap_ci(values, seed=3), exercises.bootstrap_ci(values, seed=3)
    assert a == b, "the same seed must give the same interval (draw with np.random.default_rng(seed))"
    width = a[2] - a[1]
    assert 0.16 < width < 0.23, (
        f"for 400 standard-normal values the 95% interval of the mean should be about 2 x 1.96 / sqrt(400) = 0.196 wide; "
        f"yours is {width:.3f}. Resample all S units per resample, with replacement")
    narrow = exercises.bootstrap_ci(values, level=0.5, seed=3)
    assert narrow[2] - narrow[1] < width, "a 50% interval must be narrower than a 95% one (use `level`)"


def probe_with(exercises, dim: int = 8, heads: int = 2) -> AttentiveProbe:
    """The real one-task AttentiveProbe whose pooling is your attentive_pool."""
    probe = AttentiveProbe(dim, [2], heads)
    with torch.no_grad():  # small random starts, as patchworld.evaluation.probes.train_probe does
        generator = torch.Generator().manual_seed(0)
        probe.queries.copy_(torch.randn(probe.queries.shape, generator=generator) * 0.02)
        probe.classifier.weight.copy_(torch.randn(probe.classifier.weight.shape, generator=generator) * 0.02)
    probe.pool = lambda tokens: exercises.attentive_pool(tokens, probe.queries[0])[:, None]  # (B, 1, D)
    return probe


def test_attentive_pool_matches_the_probe(exercises):
    g = torch.Generator().manual_seed(0)
    tokens, queries = torch.randn(3, 5, 8, generator=g), torch.randn(2, 4, generator=g)
    probe = AttentiveProbe(8, [2], heads=2)
    with torch.no_grad():
        probe.queries[0] = queries
    yours = exercises.attentive_pool(tokens, queries)
    assert torch.is_tensor(yours) and yours.shape == (3, 8), (
        f"attentive_pool must return (B, D) = (3, 8); got {tuple(yours.shape) if torch.is_tensor(yours) else yours}")
    expected = probe.pool(tokens)[:, 0]
    assert torch.allclose(yours, expected, atol=1e-5), (
        f"your pooled features differ from AttentiveProbe.pool's by {float((yours - expected).abs().max()):.3g}: head h "
        "attends with its query over channel slice h of the tokens, scaled by 1/sqrt(d), softmax over the tokens")
    zero = exercises.attentive_pool(tokens, torch.zeros(2, 4))
    assert torch.allclose(zero, tokens.mean(1), atol=1e-5), "zero queries must pool uniformly (the mean of the tokens)"


def test_attentive_pool_trains_the_real_probe(exercises):
    g = torch.Generator().manual_seed(0)
    B, L, D = 128, 6, 8
    tokens = torch.randn(B, L, D, generator=g)
    where = torch.randint(0, L, (B,), generator=g)  # one marked token per clip holds the label
    tokens[torch.arange(B), where, 0] = 6.0
    labels = (tokens[torch.arange(B), where, 1] > 0).long()  # in the marker's head (channels 0-3)
    probe = probe_with(exercises, D, heads=2)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(probe(tokens)[:, 0], labels)
        optimizer.zero_grad()
        loss.backward()
        assert probe.queries.grad is not None and bool(probe.queries.grad.abs().sum() > 0), (
            "no gradient reached the queries through attentive_pool; keep the computation in torch")
        optimizer.step()
    accuracy = float((probe(tokens)[:, 0].argmax(-1) == labels).float().mean())
    assert accuracy > 0.9, (
        f"the attentive probe built on your pooling reached only {accuracy:.2f} training accuracy on a task where one "
        "marked token holds the label (attention should learn to find it)")
