"""A tiny RGB image folder (tests.helpers) and one short run of the tiny ResNet recipe on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_rgb_folder, tiny_resnet_recipe
from training.loop import train
from training.losses import GANLoss


@pytest.fixture(scope="session")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rgb_folder(tmp_path_factory.mktemp("rgb"))


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
