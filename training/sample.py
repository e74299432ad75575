"""`python -m training sample`: a PNG grid of generated images from a weights folder."""

from __future__ import annotations

from pathlib import Path

import torch

from gancore.fileio import atomic_write_bytes
from gancore.images import encode_png, make_grid, to_uint8, upscale
from gancore.sampling import seeded_latents
from gancore.weights import LoadedGenerator, load_generator


class MissingLabel(ValueError):
    """A conditional model asked for samples without a label."""


def write_sample_grid(
    weights: str | Path,
    out: str | Path,
    label: str | None,
    n: int,
    seed: int,
    nrow: int = 8,
    scale: int = 1,
    device: torch.device | str = "cpu",
    truncation: float = 1.0,
) -> LoadedGenerator:
    """n images of `label` (None for an unconditional model) from latents of `seed` (truncated
    at psi `truncation`, 1 = off), as one PNG grid at `out`; returns the generator used. The
    images are those the service gives for the same model, label, seed and truncation."""
    device = torch.device(device)
    gen = load_generator(weights, device)
    labels = None
    if gen.conditional:
        if label is None:
            raise MissingLabel(f"{gen.name} is a conditional model: pass --label, one of {', '.join(gen.labels)} "
                               "(official names and class indices work too)")
        labels = torch.full((n,), gen.label_id(label), dtype=torch.long, device=device)
    z = seeded_latents(seed, n, gen.latent_dim, truncation).to(device)
    with torch.inference_mode():
        images = to_uint8(gen.model(z, labels).cpu())
    grid = upscale(make_grid(images, nrow=nrow), scale)
    atomic_write_bytes(Path(out), encode_png(grid, smallest=True))
    return gen
