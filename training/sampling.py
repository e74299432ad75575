"""Sampling helpers shared by the trainer, the CLI and the service: seeded latents, latent
walks, image grids and PNG encoding. Pure functions on CPU tensors.
"""

from __future__ import annotations

import io
import math

import numpy as np
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


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (C, rows*(H+p)+p, nrow*(W+p)+p), rows filled left to right."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("make_grid expects uint8 images shaped (N, C, H, W)")
    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    grid = torch.full(
        (c, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value, dtype=torch.uint8
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def upscale(grid: torch.Tensor, scale: int) -> torch.Tensor:
    """Integer nearest-neighbour upscaling of a (C, H, W) image."""
    if scale == 1:
        return grid
    return grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def encode_png(image: torch.Tensor, compress_level: int = 1) -> bytes:
    """uint8 (C, H, W) with C in {1, 3} -> PNG bytes (grayscale or RGB)."""
    from PIL import Image

    arr = image.permute(1, 2, 0).contiguous().numpy()
    if arr.shape[2] == 1:
        pil = Image.fromarray(arr[:, :, 0], mode="L")
    elif arr.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    else:
        raise ValueError(f"cannot encode {arr.shape[2]} channels as PNG")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
