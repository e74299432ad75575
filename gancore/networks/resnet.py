"""Residual generator and critic of Gulrajani et al. 2017 (their official CIFAR-10 ResNet), in
PyTorch, with a deeper variant for larger images such as 96x96.

Generator: linear z -> (width, s, s), pre-activation up-blocks (CBN -> ReLU -> nearest 2x ->
conv3x3 -> CBN -> ReLU -> conv3x3, shortcut 2x + conv1x1), BN -> ReLU -> conv3x3 -> tanh.
CBN is batch norm without its own affine whose per-channel gain and bias come from the class:
gain = emb @ gain_table with emb the one-hot code of the label, so a row of the table is the
class's gain and a mix of two codes (interpolation between classes) mixes their gains.

Critic: an "optimized" first block (conv3x3 -> ReLU -> conv3x3 -> mean-pool, shortcut mean-pool
-> conv1x1), pre-activation down-blocks with mean-pool down-sampling and layer norm, two blocks
at the final resolution, ReLU, global mean pooling, a linear score, and optionally a projection
term and an AC-GAN head (raw logits). No batch norm: the gradient penalty is per sample.

Resolutions (the number of blocks follows from image_size):
    generator starts at image_size / 2**n with n the halvings while the size is even and > 7:
        32 -> 4x4 and 3 up-blocks (the paper), 64 -> 4x4 and 4, 96 -> 6x6 and 4, 28 -> 7x7 and 2;
    critic halves while the size is even and > 8, then two blocks without resampling:
        32 -> 8x8 (optimized block + 1 down-block, the paper), 64 -> 8x8, 96 -> 6x6 (+ 3 down).
Width is the same in every block (128 in the paper), as in the official code.

Only modules live here, plus `network_kwargs` (both constructors' arguments from a recipe);
every constructor argument is plain data so that `gancore.weights` records it in `config.json`
and rebuilds the generator. Architecture name: "resnet".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gancore.networks.base import CriticBase, NetworkRecipe


def generator_plan(image_size: int) -> tuple[int, int]:
    """(start size, number of up-blocks) for an output of image_size x image_size."""
    size, n = image_size, 0
    while size > 7 and size % 2 == 0:
        size //= 2
        n += 1
    if n == 0 or not 3 <= size <= 7:
        raise ValueError(f"image_size {image_size} is not supported by the ResNet (use 32, 48, 64, 96...)")
    return size, n


def critic_plan(image_size: int) -> int:
    """Number of down-samplings (the optimized block counts as one) for the critic."""
    size, n = image_size, 0
    while size > 8 and size % 2 == 0:
        size //= 2
        n += 1
    if n == 0:
        raise ValueError(f"image_size {image_size} is not supported by the ResNet critic (use 32, 64, 96...)")
    return n


def _init_conv(conv: nn.Conv2d | nn.Linear, gain: float = 1.0) -> None:
    # Glorot uniform: gain sqrt(2) before a ReLU path (the official code's He init), 1 elsewhere.
    nn.init.xavier_uniform_(conv.weight, gain=gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias depend on the class: (B, C, H, W), (B, K) -> (B, C, H, W).

    `emb` holds one weight per class (a one-hot row for a single label); gain = emb @ gain_table.
    Tables start at gain 1 and bias 0, so the layer starts as plain batch norm. With
    num_classes 0 it is ordinary batch norm with one learned gain and bias, and `emb` is ignored.
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        # Keywords: BatchNorm2d's second positional argument is eps, not momentum.
        self.bn = nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=num_classes == 0)
        if num_classes > 0:
            self.gain = nn.Parameter(torch.ones(num_classes, num_features))  # (K, C)
            self.bias = nn.Parameter(torch.zeros(num_classes, num_features))  # (K, C)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if self.num_classes == 0:
            return h
        if emb is None:
            raise ValueError("conditional batch norm needs the class code")
        gamma = (emb @ self.gain)[:, :, None, None]  # (B, C, 1, 1)
        beta = (emb @ self.bias)[:, :, None, None]
        return h * gamma + beta


class UpBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution: (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = ConditionalBatchNorm2d(out_ch, num_classes)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        _init_conv(self.conv1, math.sqrt(2))
        _init_conv(self.conv2, math.sqrt(2))
        _init_conv(self.shortcut)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.norm1(x, emb))
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.conv2(F.relu(self.norm2(h, emb)))
        # A 1x1 conv commutes with nearest up-sampling: convolve first, at a quarter of the cost.
        return h + F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")


class ResNetGenerator(nn.Module):
    """z (B, latent_dim) and labels (B,) -> images (B, C, H, W) in [-1, 1].

    `label_embedding` gives the one-hot class code (B, K) and `forward_embedded` takes any mix of
    codes, which is how the service walks from one class to another.
    """

    def __init__(
        self,
        latent_dim: int = 128,  # size of z
        num_classes: int = 10,  # 0 makes the generator unconditional (plain batch norm)
        channels: int = 3,  # image channels
        image_size: int = 32,  # output height and width
        width: int = 128,  # channels in every block (the paper's DIM_G)
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.width = width
        self.start, n_up = generator_plan(image_size)
        self.fc = nn.Linear(latent_dim, width * self.start * self.start)
        self.blocks = nn.ModuleList(UpBlock(width, width, num_classes) for _ in range(n_up))
        self.out_norm = nn.BatchNorm2d(width)  # unconditional, as in the official code
        self.to_image = nn.Conv2d(width, channels, 3, padding=1)
        _init_conv(self.fc)
        _init_conv(self.to_image)
        if num_classes > 0:
            # One-hot codes as a buffer: they follow .to(device, dtype); not saved with the weights.
            self.register_buffer("class_codes", torch.eye(num_classes), persistent=False)

    def label_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> (B, K) one-hot codes; mixes of codes are valid inputs too."""
        if self.num_classes == 0:
            raise ValueError("unconditional generator has no label embedding")
        codes: torch.Tensor = self.class_codes  # type: ignore[assignment]  # a buffer: a Tensor
        return F.embedding(labels, codes)

    def forward_embedded(self, z: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        if self.num_classes > 0 and emb is None:
            raise ValueError("this generator is conditional: pass labels")
        h = self.fc(z).view(z.shape[0], self.width, self.start, self.start)  # (B, W, s, s)
        for block in self.blocks:
            h = block(h, emb)  # (B, W, 2s, 2s) ...
        h = F.relu(self.out_norm(h))
        return torch.tanh(self.to_image(h))  # (B, C, H, W)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
            emb = self.label_embedding(labels)
        return self.forward_embedded(z, emb)


def _layer_norm(ch: int, norm: str) -> nn.Module:
    # Layer norm over (C, H, W) with a per-channel gain and bias, as the official Layernorm op.
    return nn.GroupNorm(1, ch) if norm == "layer" else nn.Identity()


class OptimizedBlock(nn.Module):
    """The critic's first block: no normalisation or activation before the first conv."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        _init_conv(self.conv1, math.sqrt(2))
        _init_conv(self.conv2, math.sqrt(2))
        _init_conv(self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DownBlock(nn.Module):
    """Pre-activation residual block, mean-pool down-sampling when `down`: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int, down: bool, norm: str):
        super().__init__()
        self.down = down
        self.norm1 = _layer_norm(in_ch, norm)
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.norm2 = _layer_norm(in_ch, norm)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if (down or in_ch != out_ch) else None
        _init_conv(self.conv1, math.sqrt(2))
        _init_conv(self.conv2, math.sqrt(2))
        if self.shortcut is not None:
            _init_conv(self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class ResNetCritic(CriticBase):
    """images (B, C, H, W) and labels (B,) -> (score (B,), class logits (B, K) or None)."""

    def __init__(
        self,
        num_classes: int = 10,  # classes for the projection/label channels/AC head
        channels: int = 3,  # image channels
        image_size: int = 32,  # input height and width
        width: int = 128,  # channels in every block (the paper's DIM_D)
        conditioning: str = "none",  # "projection" | "channels" | "none" (the paper's AC-GAN: none)
        aux_classifier: bool = False,  # AC-GAN head, raw logits
        norm: str = "layer",  # "layer" | "spectral" (SN, no layer norm) | "none" (the official code's default)
    ):
        super().__init__(num_classes, conditioning, aux_classifier, norm)
        in_ch = self.input_channels(channels)
        n_down = critic_plan(image_size)
        blocks: list[nn.Module] = [OptimizedBlock(in_ch, width)]
        blocks += [DownBlock(width, width, True, norm) for _ in range(n_down - 1)]
        blocks += [DownBlock(width, width, False, norm) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.score = nn.Linear(width, 1)
        _init_conv(self.score)
        self.project = nn.Embedding(num_classes, width) if conditioning == "projection" else None
        if self.project is not None:
            nn.init.xavier_uniform_(self.project.weight)
        self.classify = nn.Linear(width, num_classes) if aux_classifier else None
        if self.classify is not None:
            _init_conv(self.classify)
        if norm == "spectral":
            self.spectral_normalise()

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = F.relu(self.blocks(self.with_label_channels(x, labels))).mean(dim=(2, 3))  # (B, width): mean pool
        return self.heads(h, labels)


def network_kwargs(
    recipe: NetworkRecipe, num_classes: int, channels: int, image_size: int
) -> tuple[dict, dict]:
    """(generator kwargs, critic kwargs) for a recipe; num_classes 0 means unconditional.
    The recipe's g_base_width / d_base_width are this family's `width` (one width per block)."""
    g = dict(latent_dim=recipe.latent_dim, num_classes=num_classes, channels=channels,
             image_size=image_size, width=recipe.g_base_width)
    d = dict(num_classes=num_classes, channels=channels, image_size=image_size, width=recipe.d_base_width,
             conditioning=recipe.conditioning if num_classes else "none", aux_classifier=recipe.aux_classifier,
             norm=recipe.d_norm)
    return g, d
