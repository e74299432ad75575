"""Tiny IDX datasets the tests write themselves, and tiny recipes that train in seconds."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import IDX_FILES
from training.recipe import Recipe


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def make_idx_folder(folder: Path, n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped IDX files: each class is a bright square at its own place."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 7 + 5 * c] = 230
        img_name, lbl_name = IDX_FILES[split]
        write_idx(folder / img_name, images)
        write_idx(folder / lbl_name, labels)
    return folder


@pytest.fixture
def idx_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_idx_folder(tmp_path / "fashion")
    # Test files are not the official ones: checksum verification is patched to accept them.
    monkeypatch.setattr("training.data._verify", lambda path, raw, source: None)
    return folder


def tiny_recipe(data_dir: Path, **overrides) -> Recipe:
    fields = dict(
        name="tiny", dataset="fashion-mnist", split="train", data_dir=str(data_dir),
        latent_dim=8, embed_dim=4, g_base_width=32, d_base_width=16, batch_size=16,
        n_critic=2, steps=6, lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.9), lr_decay="linear",
        ema_beta=0.9, log_every=2, checkpoint_every=100, keep_checkpoints=2, seed=7,
    )
    fields.update(overrides)
    return Recipe(**fields).validate()
