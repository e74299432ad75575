"""Latent sampling shared by the trainer, the CLI and the service: seeded latents and latent
walks. Pure functions on CPU tensors (images: gancore.images).
"""

from __future__ import annotations

import torch


def seeded_latents(seed: int, n: int, latent_dim: int) -> torch.Tensor:
    """(n, latent_dim) standard normal drawn on the CPU from this seed alone.

    The same seed gives the same latents whatever else runs, on any device: the draw never
    touches a global or a GPU random generator.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(n, latent_dim, generator=gen)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a (D,) and b (D,) at fractions t (S,) -> (S, D)."""
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
