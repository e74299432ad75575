"""The image-folder cache: decoded once, read back unchanged, invalidated by a changed file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_rgb_folder
from training import data as data_mod
from training.data import load_image_folder


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small folder above the (lowered) caching threshold, and a private cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "FOLDER_CACHE_MIN_IMAGES", 4)
    return make_rgb_folder(tmp_path / "data", per_class=2) / "train"


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "cgan-service" / "image-folders").glob("*.npz"))


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds the folder")

    monkeypatch.setattr(Image, "open", refuse)


def test_second_load_reads_the_cache_and_equals_the_first(cached, tmp_path, monkeypatch):
    first = load_image_folder(cached, 32, 3)
    assert len(cache_files(tmp_path)) == 1
    forbid_decoding(monkeypatch)
    second = load_image_folder(cached, 32, 3)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.checksum == second.checksum and first.class_names == second.class_names
    assert second.images.dtype == torch.uint8 and second.images.shape == (8, 3, 32, 32)


def test_a_changed_file_is_decoded_again(cached, tmp_path):
    before = load_image_folder(cached, 32, 3)
    path = sorted((cached / "white-bar").iterdir())[0]
    Image.fromarray(np.full((32, 32, 3), 7, dtype=np.uint8)).save(path)
    after = load_image_folder(cached, 32, 3)
    assert len(cache_files(tmp_path)) == 2  # a new key; the old entry is left alone
    assert after.checksum != before.checksum
    assert int(after.images[-2].max()) == 7  # white-bar is the last class; its first file


def test_size_and_channels_are_part_of_the_key(cached, tmp_path):
    load_image_folder(cached, 32, 3)
    gray = load_image_folder(cached, 32, 1)
    assert gray.images.shape == (8, 1, 32, 32)
    assert len(cache_files(tmp_path)) == 2


def test_a_corrupt_cache_file_warns_and_decodes_again(cached, tmp_path):
    first = load_image_folder(cached, 32, 3)
    cache_files(tmp_path)[0].write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.warns(UserWarning, match="unreadable image-folder cache"):
        again = load_image_folder(cached, 32, 3)
    assert torch.equal(first.images, again.images)


def test_small_folders_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_rgb_folder(tmp_path / "data", per_class=2) / "train"
    assert len(list(root.rglob("*.png"))) < data_mod.FOLDER_CACHE_MIN_IMAGES
    load_image_folder(root, 32, 3)
    assert cache_files(tmp_path) == []
