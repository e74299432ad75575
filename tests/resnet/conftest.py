"""A tiny RGB image folder the tests write themselves, a tiny ResNet recipe and one short run of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.loop import train
from training.losses import GANLoss
from training.recipe import Recipe

CLASSES = ["red-square", "green-square", "blue-square", "white-bar"]



def toy_image(rng: np.random.Generator, c: int, size: int = 32) -> np.ndarray:
    """Dark noise plus a bright shape whose place and colour depend on the class."""
    img = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
    dy, dx = rng.integers(0, 4, size=2)
    if c < 3:
        y, x = [(2, 2), (16, 4), (8, 16)][c]
        img[y + dy : y + dy + 12, x + dx : x + dx + 12, c] = 240
    else:
        img[12 + dy : 18 + dy, :, :] = 230
    return img


def make_rgb_folder(root: Path, per_class: int = 8, size: int = 32, seed: int = 0) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png, as CIFAR-10 arrives."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(toy_image(rng, c, size)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rgb_folder(tmp_path_factory.mktemp("rgb"))


def tiny_resnet_recipe(data_dir: Path, **overrides) -> Recipe:
    fields = dict(
        name="tiny-resnet", arch="resnet", dataset="folder", split="train", data_dir=str(data_dir),
        image_size=32, channels=3, latent_dim=16, g_base_width=16, d_base_width=16,
        conditioning="none", aux_classifier=True, batch_size=8, g_batch_size=16, n_critic=5,
        steps=4, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.9), lr_decay="linear", ema_beta=0.9,
        log_every=2, checkpoint_every=100, keep_checkpoints=2, seed=3, samples_per_epoch=False,
    )
    fields.update(overrides)
    return Recipe(**fields).validate()


@pytest.fixture(scope="session")
def run(tmp_path_factory, rgb_root) -> tuple[Path, list[int]]:
    """An 8-step AC-GAN run of the tiny ResNet; also records the generator-phase batch sizes."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    g_batches: list[int] = []
    original = GANLoss.generator_loss

    def recording(self, critic, fake, labels):
        g_batches.append(fake.shape[0])
        return original(self, critic, fake, labels)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GANLoss, "generator_loss", recording)
        train(tiny_resnet_recipe(rgb_root, steps=8, log_every=4), run_dir, device="cpu", progress=False)
    return run_dir, g_batches
