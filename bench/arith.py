"""Arithmetic of a forward pass: multiply-accumulates per image of Linear, Conv2d and
ConvTranspose2d layers (the rest, batch norm and activations, is a rounding error), counted
with forward hooks on a batch of one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def macs_per_image(model: nn.Module, *inputs: Any) -> int:
    """MACs of one forward on `inputs` (a batch of one)."""
    total = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += out.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.ConvTranspose2d):
            # every input pixel scatters into k*k outputs for each (in, out) channel pair
            k = module.kernel_size[0] * module.kernel_size[1]
            total += args[0].numel() * (module.out_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def generator_macs(model: nn.Module, latent_dim: int, device: str = "cpu") -> int:
    z = torch.zeros(1, latent_dim, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    return macs_per_image(model, z, labels)


def implied_tflops(macs: int, images_per_s: float) -> float:
    """2 FLOPs per MAC."""
    return 2.0 * macs * images_per_s / 1e12
