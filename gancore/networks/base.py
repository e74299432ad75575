"""What the critics of every family share, the recipe fields their arguments are built from,
and a parameter count."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class NetworkRecipe(Protocol):
    """The recipe fields a family's `network_kwargs` reads (training.recipe.Recipe has them)."""

    latent_dim: int
    embed_dim: int
    g_base_width: int
    d_base_width: int
    conditioning: str
    aux_classifier: bool
    d_norm: str


class CriticBase(nn.Module):
    """What both critics share: argument checks, label channels on the way in, and the heads on
    the way out (unconditional score, projection term, auxiliary classifier). Subclasses build
    `self.score`, `self.project` (or None) and `self.classify` (or None) over their features."""

    score: nn.Module  # features (B, F) -> (B, 1)
    project: nn.Module | None  # labels (B,) -> (B, F), the projection head
    classify: nn.Module | None  # features (B, F) -> class logits (B, K), the AC head

    def __init__(self, num_classes: int, conditioning: str, aux_classifier: bool, norm: str):
        super().__init__()
        if conditioning not in ("projection", "channels", "none"):
            raise ValueError(f"conditioning must be projection, channels or none, got {conditioning!r}")
        if norm not in ("layer", "none", "spectral"):
            raise ValueError(f"critic norm must be layer, spectral or none (no batch norm with a penalty), got {norm!r}")
        if (conditioning != "none" or aux_classifier) and num_classes < 1:
            raise ValueError("a conditional or AC critic needs num_classes >= 1")
        self.num_classes = num_classes
        self.conditioning = conditioning

    def spectral_normalise(self) -> None:
        """Spectral normalisation (Miyato et al. 2018) of every convolution, linear layer and the
        projection embedding: each divided by its largest singular value, estimated by one power
        iteration per training forward (the vectors are buffers, so a resume restores them).
        Subclasses call it at the end of __init__ when norm is "spectral"."""
        from torch.nn.utils.parametrizations import spectral_norm

        for module in list(self.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                spectral_norm(module)

    def input_channels(self, channels: int) -> int:
        return channels + (self.num_classes if self.conditioning == "channels" else 0)

    def with_label_channels(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Checks labels are given when needed; appends one-hot maps for "channels" conditioning."""
        if self.conditioning != "none" and labels is None:
            raise ValueError("this critic is conditional: pass labels")
        if self.conditioning != "channels":
            return x
        assert labels is not None  # checked above
        onehot = F.one_hot(labels, self.num_classes).to(x.dtype)  # (B, K)
        maps = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return torch.cat([x, maps], dim=1)

    def heads(
        self, h: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (B, F) -> (score (B,), class logits (B, K) or None)."""
        out = self.score(h).squeeze(1)  # (B,)
        if self.project is not None:
            assert labels is not None  # with_label_channels checked it
            out = out + (self.project(labels) * h).sum(dim=1)
        logits = self.classify(h) if self.classify is not None else None
        return out, logits


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
