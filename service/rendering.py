"""Images -> a response body: PNG or WebP grids for /generate, strips for /interpolate, or a JSON
document with the latents and one PNG per image. CPU only, run off the event loop (on the
model's thread or in its engine process)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gancore.images import encode_png, encode_webp, make_grid, upscale

# format -> the media type of the body it makes; the order is the preference among formats a
# client accepts equally (service/routes/common.py: negotiate)
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "json": "application/json"}


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
class RenderSpec:
    """How one request's images become its response body. A plain value, so that it can travel
    to an engine process as JSON (service/engine.py).

    format "png" or "webp": one grid `nrow` images wide (a strip when nrow is the number of
    images), `padding` pixels apart, upscaled by `scale`; WebP is lossless, the PNG's pixels.
    format "json": the JSON document `{**meta, "latents": [[...]], "images": [base64 PNG, ...]}`,
    each image upscaled by `scale` on its own (nrow and padding unused). The latents are written
    as Python floats of the float32 rows, whose JSON text parses back to the same float32.
    """

    format: str
    nrow: int
    padding: int
    scale: int
    meta: dict[str, Any] | None = field(default=None, compare=False)  # json: the fields before "latents"

    def __call__(self, images: torch.Tensor, latents: torch.Tensor) -> bytes:
        """uint8 (n, C, H, W) and their float32 (n, D) latents -> the body."""
        if self.format == "png":
            return grid_png(images, self.nrow, self.padding, self.scale)
        if self.format == "webp":
            return encode_webp(upscale(make_grid(images, nrow=self.nrow, padding=self.padding), self.scale))
        if self.format == "json":
            pngs = [base64.b64encode(encode_png(upscale(image, self.scale))).decode("ascii") for image in images]
            return json.dumps({**(self.meta or {}), "latents": latents.tolist(), "images": pngs}).encode()
        raise ValueError(f"unknown render format {self.format!r}; one of {', '.join(MEDIA_TYPES)}")
