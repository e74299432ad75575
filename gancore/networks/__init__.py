"""Network families behind one registry.

An architecture is one module holding its generator, its critic and `network_kwargs` (both
constructors' arguments from a recipe), plus one line in ARCHITECTURES. The name is what
recipes' `arch` and weights folders' `config.json` "architecture" say; the generator is rebuilt
from that name and the recorded arguments alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from gancore.networks import dcgan, resnet
from gancore.networks.base import NetworkRecipe, count_parameters


class Architecture(NamedTuple):
    generator: type[nn.Module]
    critic: type[nn.Module]
    network_kwargs: Callable[[NetworkRecipe, int, int, int], tuple[dict, dict]]


ARCHITECTURES: dict[str, Architecture] = {
    "dcgan": Architecture(dcgan.ConditionalGenerator, dcgan.ConditionalCritic, dcgan.network_kwargs),
    "resnet": Architecture(resnet.ResNetGenerator, resnet.ResNetCritic, resnet.network_kwargs),
}


class ArchitectureRecipe(NetworkRecipe, Protocol):
    arch: str
    conditional: bool


def build_networks(
    recipe: ArchitectureRecipe, num_classes: int, channels: int, image_size: int
) -> tuple[nn.Module, nn.Module, dict]:
    """Generator and critic for a recipe; returns (G, D, G's constructor arguments).

    An unconditional recipe gets num_classes 0 (and critic conditioning "none") whatever the data has.
    """
    family = ARCHITECTURES[recipe.arch]
    k = num_classes if recipe.conditional else 0
    g_args, d_args = family.network_kwargs(recipe, k, channels, image_size)
    return family.generator(**g_args), family.critic(**d_args), g_args


@runtime_checkable
class LabelMixing(Protocol):
    """What a conditional generator offers beyond `forward(z, labels)` so that the service can
    walk from one class to another: labels to a code, and a forward pass on any mix of codes.
    Both families implement it."""

    def label_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> (B, E) class code."""
        ...

    def forward_embedded(self, z: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """z (B, latent_dim) and codes (B, E) or None -> images (B, C, H, W) in [-1, 1]."""
        ...


__all__ = ["ARCHITECTURES", "Architecture", "LabelMixing", "NetworkRecipe", "build_networks",
           "count_parameters"]
