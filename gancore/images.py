"""Image conversion shared by the trainer, the CLI and the service: the generator's [-1, 1]
floats to and from uint8 pixels, image grids, integer upscaling, PNG and lossless WebP encoding."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL.Image import Image


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


def _pil_image(image: torch.Tensor) -> Image:
    """uint8 (C, H, W) with C in {1, 3} -> a PIL image (mode L or RGB)."""
    from PIL import Image as pil

    arr = image.permute(1, 2, 0).contiguous().numpy()
    if arr.shape[2] == 1:
        return pil.fromarray(arr[:, :, 0], mode="L")
    if arr.shape[2] == 3:
        return pil.fromarray(np.ascontiguousarray(arr), mode="RGB")
    raise ValueError(f"cannot encode {arr.shape[2]} channels as an image")


def encode_png(image: torch.Tensor, compress_level: int = 1) -> bytes:
    """uint8 (C, H, W) with C in {1, 3} -> PNG bytes (grayscale or RGB)."""
    buf = io.BytesIO()
    _pil_image(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_webp(image: torch.Tensor, method: int = 1, quality: int = 0) -> bytes:
    """uint8 (C, H, W) with C in {1, 3} -> lossless WebP bytes: decoded, the same pixels as the
    PNG (WebP has no grayscale mode, so a grayscale image decodes as RGB with equal channels).

    `method` and `quality` set libwebp's effort, not the fidelity. Measured on grids of the
    shipped 28x28 generator: method 1 makes the file 12% (scale 1) to 30% (scale 4) smaller than
    the PNG, at 4-15x the PNG's encoding time (64 images: 6 ms at scale 1, 80 ms at scale 4);
    method 0 is about as fast as the PNG but larger, and libwebp's default (method 4, quality 80)
    is no smaller than method 1 and slower again.
    """
    buf = io.BytesIO()
    _pil_image(image).save(buf, format="WEBP", lossless=True, method=method, quality=quality)
    return buf.getvalue()
