"""Image conversion shared by the trainer, the CLI and the service: the generator's [-1, 1]
floats to and from uint8 pixels, image grids, integer upscaling and PNG encoding."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the generator's output range."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return ((images.float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


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
