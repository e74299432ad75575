"""Latent sampling shared by the trainer, the CLI and the service: seeded latents and latent
walks. Pure functions on CPU tensors (images: gancore.images).
"""

from __future__ import annotations

import math

import torch

# Rounds of redrawing before the last out-of-range entries are drawn by inverse CDF; with psi
# >= 0.05 a round keeps at least 5% of what it redraws, so 64 rounds leave ~0.95**64 = 4% of a
# tiny psi's entries, and none in practice for the psi values people use (0.5-1).
REDRAW_ROUNDS = 64

# The largest seed anything accepts: torch.Generator.manual_seed takes 64 bits, and keeping seeds
# signed-safe lets every caller (the service's schemas, the CLI) agree on one range, 0..MAX_SEED.
MAX_SEED = 2**63 - 1


def seeded_latents(seed: int, n: int, latent_dim: int, truncation: float = 1.0) -> torch.Tensor:
    """(n, latent_dim) standard normal drawn on the CPU from this seed alone, truncated to
    |z| <= truncation_threshold(truncation) when truncation < 1.

    The same seed gives the same latents whatever else runs, on any device: the draw never
    touches a global or a GPU random generator. Truncation redraws only the entries out of
    range (BigGAN's resampling), from the same generator, so an entry inside the range is the
    one the untruncated draw gives.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z = torch.randn(n, latent_dim, generator=gen)
    if truncation >= 1.0:
        return z
    return _redraw_outside(z, truncation_threshold(truncation), gen)


def truncation_threshold(psi: float) -> float:
    """The |z| bound for truncation psi in (0, 1]: the bound that keeps the central fraction psi
    of a standard normal's mass, Phi^-1((1 + psi) / 2). psi 1 -> inf (off), 0.9 -> 1.645,
    0.7 -> 1.036, 0.5 -> 0.674."""
    if not 0.0 < psi <= 1.0 or math.isnan(psi):
        raise ValueError(f"truncation must be in (0, 1], not {psi}")
    if psi == 1.0:
        return math.inf
    return math.sqrt(2.0) * torch.special.erfinv(torch.tensor(psi, dtype=torch.float64)).item()


def _redraw_outside(z: torch.Tensor, threshold: float, gen: torch.Generator) -> torch.Tensor:
    """Redraw entries with |z| > threshold from `gen` until none is left (deterministic: the
    draws depend only on the generator's state and which entries are out)."""
    z = z.clone()
    for _ in range(REDRAW_ROUNDS):
        out = z.abs() > threshold
        count = int(out.sum())
        if count == 0:
            return z
        z[out] = torch.randn(count, generator=gen)
    out = z.abs() > threshold
    count = int(out.sum())
    if count:  # what a tiny psi leaves: the same truncated normal by inverse CDF
        p = torch.special.ndtr(torch.tensor(threshold, dtype=torch.float64))
        u = torch.rand(count, generator=gen, dtype=torch.float64)
        z[out] = torch.special.ndtri((1 - p) + u * (2 * p - 1)).float()
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a (D,) and b (D,) at fractions t (S,) -> (S, D)."""
    if a.norm() == 0 or b.norm() == 0:  # a zero latent (one a client sent) has no direction
        return lerp(a, b, t)
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    if so.abs() < 1e-6:  # parallel vectors: fall back to a straight line
        return lerp(a, b, t)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight-line interpolation, (D,), (D,), (S,) -> (S, D)."""
    t = t[:, None]
    return (1 - t) * a + t * b
