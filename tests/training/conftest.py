"""Fixtures of the training tests; the builders they use are plain functions in tests.helpers.

- `idx_dir`: hand-made IDX files, accepted without the SHA-256 check for one test.
- `idx_data`, `tiny_classifier` (test_compare, test_vae): a tiny Fashion-MNIST-shaped IDX folder and
  a briefly trained reference classifier for it. Module-scoped: the checksum bypass they need is
  active only while the module that asked for them runs, never for the rest of tests/training.
- `data_root`, `classifier_dir` (test_evaluate, test_classifier, test_augment): a three-class RGB
  28x28 image folder and a briefly trained classifier for it.
- `rgb_root`, `resnet_run` (test_resnet_training, test_evaluation_rgb): a tiny RGB image folder and
  one short run of the tiny ResNet recipe on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gancore.weights import save_classifier
from tests.helpers import make_idx_folder, make_image_folder, make_rgb_folder, tiny_resnet_recipe
from training.classifier import train_classifier
from training.data import load_dataset
from training.loop import train
from training.losses import GANLoss


@pytest.fixture
def idx_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_idx_folder(tmp_path / "fashion")
    # Test files are not the official ones: checksum verification is patched to accept them.
    monkeypatch.setattr("training.data._verify", lambda path, raw, source, name: None)
    return folder


# ---------------------------------------------------------------- the comparison study and the VAE


@pytest.fixture(scope="module")
def _accept_test_files():
    # The hand-made IDX files are not the official ones: accept them without the SHA-256 check,
    # for the tests of the module that asked for idx_data only (the patch is undone when it ends).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("training.data._verify", lambda path, raw, source, name: None)
        yield


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory, _accept_test_files) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("fashion"), n_train=100, n_test=40)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, idx_data) -> Path:
    train = load_dataset("fashion-mnist", "train", idx_data)
    arch_args = {"channels": 1, "image_size": 28, "num_classes": 10, "width": 4, "feature_dim": 16, "dropout": 0.1}
    model = train_classifier(train.images, train.labels, 10, epochs=0, min_steps=30, batch_size=50,
                             arch_args=arch_args, seed=0)
    folder = tmp_path_factory.mktemp("weights") / "tiny-classifier"
    save_classifier(folder, model, arch_args, {"labels": train.class_names, "label_aliases": train.aliases,
                                               "dataset": "fashion-mnist", "test_accuracy": None})
    return folder


# ---------------------------------------------------------------- evaluation: a 3-class folder, a classifier


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def sets(data_root):
    """(train, test) of the 3-class folder, as the evaluation tests read them."""
    return (load_dataset("folder", "train", data_root, image_size=28, channels=3),
            load_dataset("folder", "test", data_root, image_size=28, channels=3))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, sets) -> Path:
    train = sets[0]
    arch_args = {"channels": 3, "image_size": 28, "num_classes": 3, "width": 4, "feature_dim": 16, "dropout": 0.1}
    model = train_classifier(train.images, train.labels, 3, epochs=0, min_steps=40, batch_size=30,
                             arch_args=arch_args, seed=0)
    folder = tmp_path_factory.mktemp("weights") / "tiny-classifier"
    save_classifier(folder, model, arch_args, {"labels": train.class_names, "label_aliases": {},
                                               "dataset": "folder", "test_accuracy": None})
    return folder


# ---------------------------------------------------------------- ResNet: an RGB folder, one short run


@pytest.fixture(scope="session")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rgb_folder(tmp_path_factory.mktemp("rgb"))


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory, rgb_root) -> tuple[Path, list[int]]:
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
