"""The reference classifier's network: a small CNN whose penultimate features and class
probabilities stand in for Inception in the evaluation. Its weights travel as a weights folder
like a generator's (gancore.weights.save_classifier / load_classifier)."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """images (B, C, H, W) in [-1, 1] -> class logits (B, K); `features` gives (B, feature_dim).

    Two conv blocks (conv-BN-ReLU twice, max-pool, dropout), then a fully connected feature
    layer with BN; FID and precision/recall are measured on that layer's output after ReLU.
    """

    def __init__(
        self,
        channels: int = 1,  # image channels
        image_size: int = 28,  # input height and width (divisible by 4)
        num_classes: int = 10,  # output classes
        width: int = 32,  # channels of the first block; doubled in the second
        feature_dim: int = 128,  # penultimate (feature) layer size
        dropout: float = 0.25,  # after each conv block; twice this before the output layer
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.feature_dim = feature_dim

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            )

        self.body = nn.Sequential(block(channels, width), block(width, 2 * width))
        flat = 2 * width * (image_size // 4) ** 2
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(min(2 * dropout, 0.5)), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim) penultimate activations."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K) logits
