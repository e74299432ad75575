"""Tiny Fashion-MNIST-shaped IDX data and a briefly trained reference classifier for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gancore.weights import save_classifier
from tests.helpers import make_idx_folder
from training.classifier import train_classifier
from training.data import load_dataset


@pytest.fixture(scope="package")
def _accept_test_files():
    # The hand-made IDX files are not the official ones: accept them without the SHA-256 check,
    # for this package's tests only (the patch is undone when they end).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("training.data._verify", lambda path, raw, source: None)
        yield


@pytest.fixture(scope="package")
def idx_data(tmp_path_factory, _accept_test_files) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("fashion"), n_train=100, n_test=40)


@pytest.fixture(scope="package")
def tiny_classifier(tmp_path_factory, idx_data) -> Path:
    train = load_dataset("fashion-mnist", "train", idx_data)
    arch_args = {"channels": 1, "image_size": 28, "num_classes": 10, "width": 4, "feature_dim": 16, "dropout": 0.1}
    model = train_classifier(train.images, train.labels, 10, epochs=0, min_steps=30, batch_size=50,
                             arch_args=arch_args, seed=0)
    folder = tmp_path_factory.mktemp("weights") / "tiny-classifier"
    save_classifier(folder, model, arch_args, {"labels": train.class_names, "label_aliases": train.aliases,
                                               "dataset": "fashion-mnist", "test_accuracy": None})
    return folder
