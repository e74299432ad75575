"""Tiny components for evaluation tests: an image-folder dataset (3 classes, RGB 28x28), a
briefly trained classifier and an untrained generator, all on CPU in a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_classifier, save_generator
from training.classifier import train_classifier
from training.data import load_dataset

CLASSES = ["alpha", "beta", "gamma"]
PER_CLASS = 20


def _image(rng: np.random.Generator, c: int) -> np.ndarray:
    """Noise plus a bright square whose corner and colour channel depend on the class."""
    img = rng.integers(0, 60, size=(28, 28, 3), dtype=np.uint8)
    y, x = [(2, 2), (14, 2), (8, 14)][c]
    dy, dx = rng.integers(0, 3, size=2)
    img[y + dy : y + dy + 10, x + dx : x + dx + 10, c] = 250
    return img


def make_image_folder(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_image(rng, c)).save(folder / f"{i}.png")
    return root



@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, data_root) -> Path:
    train = load_dataset("folder", "train", data_root, image_size=28, channels=3)
    arch_args = {"channels": 3, "image_size": 28, "num_classes": 3, "width": 4, "feature_dim": 16, "dropout": 0.1}
    model = train_classifier(train.images, train.labels, 3, epochs=0, min_steps=40, batch_size=30,
                             arch_args=arch_args, seed=0)
    folder = tmp_path_factory.mktemp("weights") / "tiny-classifier"
    save_classifier(folder, model, arch_args, {"labels": train.class_names, "label_aliases": {},
                                               "dataset": "folder", "test_accuracy": None})
    return folder


def save_tiny_generator(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    args = {"latent_dim": 8, "num_classes": 3, "embed_dim": 4, "channels": 3, "image_size": 28, "base_width": 32}
    save_generator(folder, ConditionalGenerator(**args), "dcgan", args, CLASSES, {},
                   extra={"steps": 0, "data_checksum": "0" * 64})
    return folder
