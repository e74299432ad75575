"""Tiny Fashion-MNIST-shaped IDX data and a briefly trained reference classifier for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.conftest import make_idx_folder
from training.classifier import save_classifier, train_classifier
from training.data import load_dataset


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared CPU: one thread avoids synchronisation overhead.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def _accept_test_files():
    # The hand-made IDX files are not the official ones: accept them without the SHA-256 check.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("training.data._verify", lambda path, raw, source: None)
        yield


@pytest.fixture(scope="session")
def idx_data(tmp_path_factory, _accept_test_files) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("fashion"), n_train=100, n_test=40)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, idx_data) -> Path:
    train = load_dataset("fashion-mnist", "train", idx_data)
    arch_args = {"channels": 1, "image_size": 28, "num_classes": 10, "width": 4, "feature_dim": 16, "dropout": 0.1}
    model = train_classifier(train.images, train.labels, 10, epochs=0, min_steps=30, batch_size=50,
                             arch_args=arch_args, seed=0)
    folder = tmp_path_factory.mktemp("weights") / "tiny-classifier"
    save_classifier(folder, model, arch_args, {"labels": train.class_names, "label_aliases": train.aliases,
                                               "dataset": "fashion-mnist", "test_accuracy": None})
    return folder
