"""Images -> PNG: grids for /generate, strips for /interpolate. CPU only, run off the event loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gancore.images import encode_png, make_grid, upscale


def default_nrow(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def grid_size(n: int, image_size: int, nrow: int, padding: int, scale: int) -> tuple[int, int]:
    """(height, width) in pixels of the PNG that `grid_png` makes, without making it."""
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    step = image_size + padding
    return (rows * step + padding) * scale, (ncol * step + padding) * scale


def grid_png(images: torch.Tensor, nrow: int, padding: int, scale: int) -> bytes:
    """uint8 (N, C, H, W) -> PNG of a grid, rows filled left to right, upscaled by `scale`."""
    return encode_png(upscale(make_grid(images, nrow=nrow, padding=padding), scale))


def strip_png(images: torch.Tensor, padding: int, scale: int) -> bytes:
    """uint8 (S, C, H, W) -> PNG of one row, for a latent walk."""
    return grid_png(images, nrow=images.shape[0], padding=padding, scale=scale)


@dataclass(frozen=True)
class PngGrid:
    """How one request's images become its PNG: a grid `nrow` images wide (a strip when nrow is
    the number of images), `padding` pixels apart, upscaled by `scale`. A plain value, so it can
    travel to an engine process as JSON."""

    nrow: int
    padding: int
    scale: int

    def __call__(self, images: torch.Tensor) -> bytes:
        return grid_png(images, self.nrow, self.padding, self.scale)
