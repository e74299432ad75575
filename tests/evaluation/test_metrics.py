"""Each metric on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import metrics as M


@pytest.fixture
def feats() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1500, 16))


def test_fid_of_a_set_with_itself_is_zero(feats):
    assert M.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_a_mean_shift_is_its_squared_length(feats):
    # Same covariance, so only the means differ: FID = ||shift||^2 = D * s^2.
    for s in (0.1, 0.5, 2.0):
        assert M.frechet_distance(feats, feats + s) == pytest.approx(16 * s * s, rel=1e-6)


def test_fid_grows_monotonically_with_a_shift(feats):
    other = np.random.default_rng(1).normal(size=(1500, 16))
    values = [M.frechet_distance(feats, other + s) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 0.5 < values[-1]


def test_fid_accepts_tensors_and_rejects_mismatched_widths(feats):
    t = torch.from_numpy(feats).float()
    assert M.frechet_distance(t, t) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="same D"):
        M.frechet_distance(feats, feats[:, :8])


def test_precision_recall_of_identical_sets_is_one(feats):
    assert M.precision_recall(feats[:500], feats[:500], k=3, block=128) == (1.0, 1.0)


def test_collapsed_generator_has_recall_near_zero(feats):
    real = feats[:500]
    collapsed = np.repeat(real[:1] + 0.01, 500, axis=0)  # one image, repeated
    precision, recall = M.precision_recall(real, collapsed, k=3)
    assert recall <= 0.01
    assert precision == 1.0  # the one sample is realistic: it sits next to a real point


def test_inception_score_of_uniform_one_hot_predictions_is_the_class_count():
    k, splits = 10, 5
    labels = np.tile(np.arange(k), splits * 200)
    probs = np.eye(k)[labels]
    mean, std = M.inception_score(probs, splits=splits)
    assert mean == pytest.approx(k, rel=0.02) and std < 0.1  # shuffled splits: nearly balanced
    assert M.inception_score(np.full((100, k), 1 / k), splits=splits)[0] == pytest.approx(1.0)
    # Class-sorted rows (as evaluate generates them) give the same score.
    assert M.inception_score(np.eye(k)[np.sort(labels)], splits=splits)[0] == pytest.approx(k, rel=0.02)
    assert M.inception_score(probs, splits=1) == pytest.approx((k, 0.0))  # exact without splitting


def test_conditional_accuracy_overall_and_per_class():
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    requested = torch.tensor([0, 0, 1, 0, 2, 2])
    overall, per_class = M.conditional_accuracy(pred, requested, num_classes=4)
    assert overall == pytest.approx(4 / 6)
    assert per_class[:3] == pytest.approx([2 / 3, 1.0, 0.5])
    assert math.isnan(per_class[3])  # never requested


def test_nearest_neighbour_distance_of_a_set_to_itself_is_zero():
    x = torch.rand(300, 1, 28, 28)
    assert M.nearest_neighbour_distances(x, x, block=64).max().item() < 1e-3
    dist, index = M.nearest_neighbours(x, x, block=64, exclude_self=True)
    assert dist.min().item() > 1.0 and not (index == torch.arange(300)).any()


def test_nearest_neighbour_finds_the_planted_copy():
    refs = torch.rand(200, 784)
    queries = refs[[5, 50, 150]] + 0.001
    dist, index = M.nearest_neighbours(queries, refs, block=2)
    assert index.tolist() == [5, 50, 150]
    assert dist.max().item() == pytest.approx(0.001 * 28, rel=1e-2)
