"""Image grids and upscaling: every pixel where the one-slice-per-image definition puts it."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gancore.images import encode_png, make_grid, upscale


def grid_by_slices(images: torch.Tensor, nrow: int, padding: int, pad_value: int) -> torch.Tensor:
    """The definition: a canvas of pad_value, image i at row i // ncol, column i % ncol."""
    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    grid = torch.full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value,
                      dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


@pytest.mark.parametrize(("n", "channels", "nrow", "padding", "pad_value"), [
    (1, 1, 1, 2, 0), (5, 1, 2, 2, 0), (16, 3, 4, 1, 255), (7, 3, 8, 0, 0), (64, 1, 8, 2, 17), (3, 1, 10, 3, 0),
])
def test_a_grid_puts_each_image_where_the_definition_does(n: int, channels: int, nrow: int, padding: int,
                                                          pad_value: int) -> None:
    images = torch.randint(0, 256, (n, channels, 6, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    assert grid.dtype == torch.uint8
    assert torch.equal(grid, grid_by_slices(images, nrow, padding, pad_value))


def test_a_grid_refuses_what_is_not_uint8_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        make_grid(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="uint8"):
        make_grid(torch.zeros(1, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_upscaling_repeats_each_pixel_scale_times_each_way(scale: int) -> None:
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(scale))
    big = upscale(image, scale)
    assert torch.equal(big, image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2))
    assert big.is_contiguous()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_png_decodes_to_the_grid(channels: int) -> None:
    images = torch.randint(0, 256, (4, channels, 7, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    grid = upscale(make_grid(images, nrow=3, padding=1), 2)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(grid))))
    expected = grid.permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, expected[:, :, 0] if channels == 1 else expected)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (32, 32), (130, 301), (1000, 7)])
def test_a_grayscale_png_is_valid_and_lossless(height: int, width: int) -> None:
    """Grayscale PNGs are written by gancore itself: Pillow must read them as mode L, with valid
    chunk CRCs, and get every pixel back."""
    pixels = torch.randint(0, 256, (1, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    data = encode_png(pixels)
    Image.open(io.BytesIO(data)).verify()  # signature, chunk order and CRCs
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "L" and decoded.size == (width, height)
        assert np.array_equal(np.asarray(decoded), pixels[0].numpy())
    assert encode_png(pixels, compress_level=9) != data  # the level reaches zlib


@pytest.mark.parametrize("channels", [1, 3])
def test_the_smallest_png_holds_the_same_pixels_in_fewer_bytes(channels: int) -> None:
    # a grid of smooth images, as a model card's: filtered rows compress them better
    y, x = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    smooth = ((x * 2 + y * 3) % 256).to(torch.uint8)
    image = torch.stack([smooth.roll(c * 7, 1) for c in range(channels)])
    fast, small = encode_png(image), encode_png(image, smallest=True)
    for data in (fast, small):
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(decoded.reshape(64, 96, channels).transpose(2, 0, 1), image.numpy())
    assert len(small) < len(fast)
