"""Evaluation metrics as pure functions on feature, probability and label arrays.

Nothing here knows about generators or datasets: `evaluate.py` extracts the arrays (classifier
features, class probabilities, pixels) and calls these. Inputs may be numpy arrays or torch
tensors; pairwise distances are computed in row blocks so 10k x 60k fits in memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _torch32(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().float().cpu().flatten(1)


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative eigenvalues,
    which are rounding noise, are clipped to 0)."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2). The trace of (S_a S_b)^1/2 equals
    that of (S_a^1/2 S_b S_a^1/2)^1/2, a symmetric PSD matrix, so eigh gives it without the
    complex round-off that sqrtm of the non-symmetric product produces.
    """
    a, b = _np64(feats_a), _np64(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_cross)
    return max(value, 0.0)


def _kth_nn_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row of the same set, (N,)."""
    n = feats.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii need more than k={k} rows, got {n}")
    radii = torch.empty(n)
    for i in range(0, n, block):
        d = torch.cdist(feats[i : i + block], feats)  # (b, N)
        # The k+1-th smallest: the smallest is the row itself (distance ~0).
        radii[i : i + block] = d.kthvalue(k + 1, dim=1).values
    return radii


def _covered(queries: torch.Tensor, refs: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """(Q,) bool: query lies inside the k-NN ball of at least one reference."""
    out = torch.empty(queries.shape[0], dtype=torch.bool)
    for i in range(0, queries.shape[0], block):
        d = torch.cdist(queries[i : i + block], refs)  # (b, R)
        out[i : i + block] = (d <= radii[None, :]).any(dim=1)
    return out


def precision_recall(
    real_feats: ArrayLike, fake_feats: ArrayLike, k: int = 3, block: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the distance to
    the k-th nearest neighbour within the set. Precision: share of fakes inside the real
    manifold (are samples realistic?). Recall: share of reals inside the fake manifold (is
    the data's variety covered?).
    """
    real, fake = _torch32(real_feats), _torch32(fake_feats)
    real_r = _kth_nn_radii(real, k, block)
    fake_r = _kth_nn_radii(fake, k, block)
    precision = _covered(fake, real, real_r, block).float().mean().item()
    recall = _covered(real, fake, fake_r, block).float().mean().item()
    return precision, recall


def inception_score(probs: ArrayLike, splits: int = 10, eps: float = 1e-12) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts of (N, K) probabilities: (mean, std).

    Between 1 and K: K when predictions are confident (one-hot) and classes equally frequent.
    Rows are shuffled (fixed seed) before splitting, so class-sorted input, as `evaluate`
    generates it, still gives every split a mix of classes.
    """
    p = _np64(probs)
    if p.ndim != 2 or p.shape[0] < splits:
        raise ValueError(f"need (N, K) probabilities with N >= splits={splits}, got {p.shape}")
    scores = []
    p = p[np.random.default_rng(0).permutation(len(p))]
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(py + eps))).sum(1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def conditional_accuracy(
    pred: ArrayLike, requested: ArrayLike, num_classes: int
) -> tuple[float, list[float]]:
    """Share of predictions equal to the requested class: overall, and per requested class
    (NaN for a class never requested)."""
    pred_t = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).long().cpu()
    req_t = torch.as_tensor(
        np.asarray(requested) if not isinstance(requested, torch.Tensor) else requested
    ).long().cpu()
    if pred_t.shape != req_t.shape or pred_t.dim() != 1:
        raise ValueError(f"pred and requested must be (N,) alike, got {tuple(pred_t.shape)}, {tuple(req_t.shape)}")
    if pred_t.numel() == 0:
        raise ValueError("no predictions to score")
    hit = (pred_t == req_t).float()
    per_class = []
    for c in range(num_classes):
        mask = req_t == c
        per_class.append(hit[mask].mean().item() if mask.any() else float("nan"))
    return hit.mean().item(), per_class


def median(values: ArrayLike) -> float:
    """The middle value of a 1-D array, the mean of the two middle ones for an even count
    (torch.median returns the lower of the two, and sample counts here are always even)."""
    v = _np64(values)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"median needs a non-empty (N,) array, got {v.shape}")
    return float(np.median(v))


def nearest_neighbours(
    queries: ArrayLike, references: ArrayLike, block: int = 512, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distance from each query row to its nearest reference row and that row's index,
    ((Q,), (Q,)). Images are flattened.

    With exclude_self (queries and references the same set) a row's match with itself is
    skipped, so the answer is the nearest *other* row.
    """
    q, r = _torch32(queries), _torch32(references)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per row, references {r.shape[1]}")
    index = torch.empty(q.shape[0], dtype=torch.long)
    for i in range(0, q.shape[0], block):
        d = torch.cdist(q[i : i + block], r)  # (b, R)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        index[i : i + block] = d.argmin(dim=1)
    # cdist's matrix-product shortcut loses precision for near-identical rows (exactly the
    # copies this looks for), so recompute the chosen pairs' distances directly.
    parts = [(q[i : i + block] - r[index[i : i + block]]).norm(dim=1) for i in range(0, len(q), block)]
    dist = torch.cat(parts) if parts else torch.zeros(0)
    return dist, index


def nearest_neighbour_distances(queries: ArrayLike, references: ArrayLike, block: int = 512) -> torch.Tensor:
    """L2 distance from each query row to its nearest reference row, (Q,)."""
    return nearest_neighbours(queries, references, block)[0]
