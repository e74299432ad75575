"""Latent sampling shared by the trainer, the CLI and the service: seeded latents and latent
walks. Pure functions on CPU tensors (images: gancore.images).
"""

from __future__ import annotations

import math

import torch

# The largest seed anything accepts: torch.Generator.manual_seed takes 64 bits, and keeping seeds
# signed-safe lets every caller (the service's schemas, the CLI) agree on one range, 0..MAX_SEED.
MAX_SEED = 2**63 - 1
_MASK64 = 2**64 - 1

# Which draw a seed gives; part of the service's ETags, so that a cache holding an image of the
# earlier draw revalidates to the new one. 2: rows independent of n, truncation by inverse CDF
# (2026-12-04).
DRAW_VERSION = 2


def seeded_latents(seed: int, n: int, latent_dim: int, truncation: float = 1.0) -> torch.Tensor:
    """(n, latent_dim) standard normal drawn on the CPU from this seed alone, truncated to
    |z| <= truncation_threshold(truncation) when truncation < 1.

    The same seed gives the same latents whatever else runs, on any device: the draw never
    touches a global or a GPU random generator. Row i does not depend on n: the first image of
    a seed's grid of 16 is that seed's single image, and a grid of 8 is the first half of the
    grid of 16. Truncation replaces only the entries out of range, each with a draw from the
    normal truncated to the range (what BigGAN's resampling converges to), so an entry inside
    the range is the one the untruncated draw gives.
    """
    z = _normal_block(n * latent_dim, _stream(seed, 0)).view(n, latent_dim)
    if truncation >= 1.0:
        return z
    return _replace_outside(z, truncation_threshold(truncation), seed)


def _normal_block(count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` standard normals whose first k are the same for every count >= k.

    torch's CPU kernel draws one uniform per entry, in order, then turns each run of 16 into
    normals by Box-Muller; a length that is not a multiple of 16 (or under 16) takes another
    path for its tail, so randn(20)[:20] and randn(80)[:20] differ. Drawing whole runs of 16
    and cutting keeps every prefix (tests/gancore/test_sampling.py checks it on this torch).
    """
    padded = max(16, -(-count // 16) * 16)
    return torch.randn(padded, generator=gen)[:count]


def _stream(seed: int, k: int) -> torch.Generator:
    """A CPU generator for the seed's k-th draw. Stream 0 is seeded with the seed itself; the
    others with a splitmix64 mix of (seed, k), so that a later draw starts at the same place for
    any number of rows (one generator carried on would start it after however many entries the
    first draw took)."""
    if k == 0:
        return torch.Generator(device="cpu").manual_seed(int(seed))
    x = (int(seed) + k * 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return torch.Generator(device="cpu").manual_seed((x ^ (x >> 31)) & MAX_SEED)


def truncation_threshold(psi: float) -> float:
    """The |z| bound for truncation psi in (0, 1]: the bound that keeps the central fraction psi
    of a standard normal's mass, Phi^-1((1 + psi) / 2). psi 1 -> inf (off), 0.9 -> 1.645,
    0.7 -> 1.036, 0.5 -> 0.674."""
    if not 0.0 < psi <= 1.0 or math.isnan(psi):
        raise ValueError(f"truncation must be in (0, 1], not {psi}")
    if psi == 1.0:
        return math.inf
    return math.sqrt(2.0) * torch.special.erfinv(torch.tensor(psi, dtype=torch.float64)).item()


def _replace_outside(z: torch.Tensor, threshold: float, seed: int) -> torch.Tensor:
    """z with every entry over `threshold` in absolute value replaced by a draw from N(0, 1)
    truncated to [-threshold, threshold], by inverse CDF from one uniform per entry of the
    seed's stream 1 (used only where the entry is out, so each entry depends on its position
    and the seed, not on n). One pass: BigGAN's redraw-until-inside gives the same distribution
    but took up to 64 full draws for a small psi (about 30 ms on the event loop for 256 x 128 at
    0.01, against 3.8 ms)."""
    flat = z.reshape(-1)
    out = flat.abs() > threshold
    if not bool(out.any()):
        return z
    p = torch.special.ndtr(torch.tensor(threshold, dtype=torch.float64))  # Phi(t)
    u = torch.rand(flat.numel(), generator=_stream(seed, 1), dtype=torch.float64)  # one per entry, in order
    inside = torch.special.ndtri((1 - p) + u * (2 * p - 1)).float()  # in [-t, t) before rounding
    # float32 rounding may land a hair beyond t: clamp to the largest float32 within it
    bound = torch.tensor(threshold, dtype=torch.float32)
    if bound.item() > threshold:
        bound = torch.nextafter(bound, torch.tensor(0.0))
    inside = inside.clamp(-bound.item(), bound.item())
    return torch.where(out, inside, flat).view_as(z)


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
