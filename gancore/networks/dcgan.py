"""Conditional DCGAN-style generator and critic for 28x28 and 32x32 images (architecture "dcgan").

Only modules live here, plus `network_kwargs`, which builds both constructors' arguments from a
recipe. Every constructor argument is plain data so that `gancore.weights` records it in
`config.json` and rebuilds the module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gancore.networks.base import CriticBase, NetworkRecipe


def _upsample_count(image_size: int) -> int:
    # Halve while even and above 4: 28 -> 7x7 start (2 doublings), 32 -> 4x4 (3), 96 -> 3x3 (5).
    n = 0
    size = image_size
    while size > 4 and size % 2 == 0:
        size //= 2
        n += 1
    if size not in (3, 4, 6, 7) or n == 0:
        raise ValueError(f"image_size {image_size} is not supported (use 28, 32, 64, 96...)")
    return n


class ConditionalGenerator(nn.Module):
    """z (B, latent_dim) and labels (B,) -> images (B, C, H, W) in [-1, 1].

    The label enters as a learned embedding joined to z; a linear layer makes the first
    feature map, transposed convolutions double it until the image size is reached.
    """

    def __init__(
        self,
        latent_dim: int = 20,  # size of z
        num_classes: int = 10,  # 0 makes the generator unconditional
        embed_dim: int = 10,  # label embedding joined to z
        channels: int = 1,  # image channels
        image_size: int = 28,  # output height and width
        base_width: int = 256,  # channels of the first feature map; halved per doubling
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels = channels
        n_up = _upsample_count(image_size)
        self.start = image_size // 2**n_up
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        in_dim = latent_dim + (embed_dim if num_classes > 0 else 0)
        self.fc = nn.Linear(in_dim, base_width * self.start * self.start, bias=False)
        self.fc_norm = nn.BatchNorm1d(base_width * self.start * self.start)
        blocks: list[nn.Module] = []
        width = base_width
        for _ in range(n_up):
            out = max(width // 2, 32)
            blocks += [
                nn.ConvTranspose2d(width, out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(width, channels, 3, 1, 1)
        self.base_width = base_width

    def label_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> (B, embed_dim): exposed so interpolation can walk between classes."""
        assert self.embed is not None, "unconditional generator has no label embedding"
        return self.embed(labels)

    def forward_embedded(self, z: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = z if emb is None else torch.cat([z, emb], dim=1)  # (B, latent + embed)
        h = F.relu(self.fc_norm(self.fc(h)))
        h = h.view(h.shape[0], self.base_width, self.start, self.start)  # (B, W, s, s)
        h = self.blocks(h)
        return torch.tanh(self.to_image(h))  # (B, C, H, W)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
            emb = self.embed(labels)
        return self.forward_embedded(z, emb)


class ConditionalCritic(CriticBase):
    """images (B, C, H, W) and labels (B,) -> (score (B,), class logits (B, K) or None).

    Strided convolutions down to about 4x4, layer norm (GroupNorm with one group, safe with a
    gradient penalty, unlike batch norm), LeakyReLU. Conditioning is a projection head
    (Miyato & Koyama 2018), label channels concatenated to the input, or none. An optional
    auxiliary classifier head returns raw logits (no softmax: cross-entropy applies it).
    """

    def __init__(
        self,
        num_classes: int = 10,  # classes for the projection/label channels/AC head
        channels: int = 1,  # image channels
        image_size: int = 28,  # input height and width
        base_width: int = 64,  # channels after the first convolution; doubled per step
        conditioning: str = "projection",  # "projection" | "channels" | "none"
        aux_classifier: bool = False,  # AC-GAN head
        norm: str = "layer",  # "layer" | "spectral" (SN-GAN, no layer norm) | "none"
    ):
        super().__init__(num_classes, conditioning, aux_classifier, norm)
        in_ch = self.input_channels(channels)
        layers: list[nn.Module] = []
        width, size, first = base_width, image_size, True
        while size > 4:
            layers.append(nn.Conv2d(in_ch, width, 4 if size % 2 == 0 else 3, 2, 1))
            size = (size + 1) // 2
            if not first and norm == "layer":
                layers.append(nn.GroupNorm(1, width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch, width, first = width, width * 2, False
        self.features = nn.Sequential(*layers)
        self.feature_dim = in_ch * size * size
        self.score = nn.Linear(self.feature_dim, 1)
        self.project = (
            nn.Embedding(num_classes, self.feature_dim) if conditioning == "projection" else None
        )
        if self.project is not None:
            nn.init.normal_(self.project.weight, std=0.02)
        self.classify = nn.Linear(self.feature_dim, num_classes) if aux_classifier else None
        if norm == "spectral":
            self.spectral_normalise()

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.features(self.with_label_channels(x, labels)).flatten(1)  # (B, feature_dim)
        return self.heads(h, labels)


def network_kwargs(
    recipe: NetworkRecipe, num_classes: int, channels: int, image_size: int
) -> tuple[dict, dict]:
    """(generator kwargs, critic kwargs) for a recipe; num_classes 0 means unconditional."""
    g = dict(latent_dim=recipe.latent_dim, num_classes=num_classes, embed_dim=recipe.embed_dim,
             channels=channels, image_size=image_size, base_width=recipe.g_base_width)
    d = dict(num_classes=num_classes, channels=channels, image_size=image_size,
             base_width=recipe.d_base_width, conditioning=recipe.conditioning if num_classes else "none",
             aux_classifier=recipe.aux_classifier, norm=recipe.d_norm)
    return g, d
