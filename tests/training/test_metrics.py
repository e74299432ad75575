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


# ---------------------------------------------------------------- FID's covariance term


def _with_moments(mean: np.ndarray, cov: np.ndarray, n: int = 400, seed: int = 0) -> np.ndarray:
    """(n, D) points whose sample mean and sample covariance (np.cov, n - 1) are exactly these."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whitened: cov = I
    return x @ np.linalg.cholesky(cov).T + mean


def _reference_fid(mu_a, cov_a, mu_b, cov_b) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), with sqrtm as scipy.linalg.sqrtm
    computes it for this diagonalisable product: V diag(sqrt(l)) V^-1 from the eigenvectors of
    the non-symmetric product itself (not the symmetrised form metrics.py uses)."""
    vals, vecs = np.linalg.eig(cov_a @ cov_b)
    root = (vecs * np.sqrt(vals.astype(complex))) @ np.linalg.inv(vecs)
    assert np.allclose(root @ root, cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_fid_of_an_anisotropic_rotated_pair_matches_sqrtm_and_the_2x2_closed_form():
    # Covariances that do not commute: a cross term tr(S_a^1/2 S_b^1/2), or one that drops
    # the rotation, gives another number; so does leaving the covariance term out.
    mu_a, mu_b = np.array([1.0, -2.0]), np.array([0.5, 0.0])
    cov_a = np.diag([4.0, 0.25])
    rot = _rotation(np.pi / 6)
    cov_b = rot @ np.diag([9.0, 1.0]) @ rot.T
    a, b = _with_moments(mu_a, cov_a, seed=1), _with_moments(mu_b, cov_b, seed=2)
    expected = _reference_fid(mu_a, cov_a, mu_b, cov_b)
    # 2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M with non-negative eigenvalues.
    m = cov_a @ cov_b
    closed = (((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
              - 2 * np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m))))
    assert expected == pytest.approx(closed, rel=1e-12)
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert M.frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)  # symmetric
    wrong_cross = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(
        M._sqrt_psd(cov_a) @ M._sqrt_psd(cov_b))
    assert abs(wrong_cross - expected) > 0.1  # the case tells the right cross term from this one


def test_fid_in_eight_dimensions_matches_sqrtm():
    rng = np.random.default_rng(3)
    q_a, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    q_b, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    cov_a = q_a @ np.diag(np.geomspace(0.1, 10, 8)) @ q_a.T
    cov_b = q_b @ np.diag(np.geomspace(5, 0.05, 8)) @ q_b.T
    mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
    a, b = _with_moments(mu_a, cov_a, n=300, seed=4), _with_moments(mu_b, cov_b, n=500, seed=5)
    assert M.frechet_distance(a, b) == pytest.approx(_reference_fid(mu_a, cov_a, mu_b, cov_b), rel=1e-8)


def test_fid_of_a_set_and_its_double_is_the_mean_norm_plus_the_trace(feats):
    # mean 2mu, covariance 4S: ||mu||^2 + tr S + 4 tr S - 2 tr sqrt(4 S^2) = ||mu||^2 + tr S.
    a = feats @ np.random.default_rng(6).normal(size=(16, 16)) + np.arange(16) / 4  # anisotropic
    expected = (a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False))
    assert M.frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- precision and recall, exact fractions

# 1-D sets small enough (< 25 rows) that cdist computes exact differences of integers.
REAL_1D = np.array([0.0, 1.0, 3.0, 6.0, 10.0])[:, None]
FAKE_1D = np.array([-6.0, -3.0, 2.0, 3.0, 4.0])[:, None]


def test_precision_recall_on_hand_made_1d_sets():
    """k = 2. Real radii (2nd nearest other point): 0->3, 1->2, 3->3, 6->4, 10->7, so the real
    manifold is [-3, 17]: fakes -3 (on the boundary of 0's ball), 2, 3, 4 are in, -6 is out.
    Fake radii: -6->8, -3->5, 2->2, 3->1, 4->2, so the fake manifold is [-14, 6]: reals 0, 1, 3
    and 6 (on the boundary of 4's ball) are in, 10 is out. Precision 4/5, recall 4/5.
    With the 1st neighbour's radius (off by one) both are 3/5, with the 3rd both are 1, and with
    `<` for `<=` the two boundary points drop out (3/5)."""
    precision, recall = M.precision_recall(REAL_1D, FAKE_1D, k=2)
    assert (precision, recall) == (pytest.approx(4 / 5), pytest.approx(4 / 5))
    assert M._kth_nn_radii(torch.tensor(REAL_1D, dtype=torch.float32), 2, 2).tolist() == [3, 2, 3, 4, 7]
    # Blocks do not change the answer.
    assert M.precision_recall(REAL_1D, FAKE_1D, k=2, block=2) == (precision, recall)


def test_precision_recall_with_k_1_and_swapped_roles():
    # k = 1: real radii 1, 1, 2, 3, 4 -> balls [-1,1] [0,2] [1,5] [3,9] [6,14]: fakes 2, 3, 4 in.
    # Fake radii 3, 3, 1, 1, 1 -> balls [-9,-3] [-6,0] [1,3] [2,4] [3,5]: reals 0, 1, 3 in.
    assert M.precision_recall(REAL_1D, FAKE_1D, k=1) == (pytest.approx(3 / 5), pytest.approx(3 / 5))
    # Precision of (real, fake) is recall of (fake, real).
    p, r = M.precision_recall(REAL_1D, FAKE_1D, k=2)
    assert M.precision_recall(FAKE_1D, REAL_1D, k=2) == (r, p)
