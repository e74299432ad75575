"""IDX loading, lookup order, verification and the messages for bad paths or files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from gancore.images import to_uint8, to_unit_range
from tests.helpers import make_idx_folder
from training.data import (
    DatasetError,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    parse_idx,
)


def test_tiny_idx_round_trip(idx_dir):
    train = load_idx_dataset("fashion-mnist", "train", idx_dir)
    test = load_idx_dataset("fashion-mnist", "test", idx_dir)
    both = load_idx_dataset("fashion-mnist", "all", idx_dir)
    assert train.images.shape == (64, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 16 and len(both) == 80
    assert torch.equal(both.labels[:64], train.labels)
    assert train.class_names[7] == "sneaker" and train.aliases["Ankle boot"] == "ankle-boot"
    assert train.checksum != both.checksum


def test_lookup_prefers_data_dir_then_env(tmp_path, monkeypatch, idx_dir):
    other = make_idx_folder(tmp_path / "env", n_train=32, n_test=8, seed=1)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(other))
    assert len(load_idx_dataset("fashion-mnist", "train", idx_dir)) == 64
    assert len(load_idx_dataset("fashion-mnist", "train", None)) == 32


def test_missing_files_message_says_where_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr("training.data.SOURCES", {
        "fashion-mnist": __import__("dataclasses").replace(
            __import__("training.data", fromlist=["SOURCES"]).SOURCES["fashion-mnist"],
            system_dir=str(tmp_path / "system"), mirrors=())
    })
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()  # a --data-dir that does not exist is refused before any lookup
    with pytest.raises(DatasetError) as err:
        load_idx_dataset("fashion-mnist", "train", tmp_path / "empty")
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and str(tmp_path / "nowhere") in msg
    assert "--data-dir" in msg and "FASHION_MNIST_DIR" in msg


def test_real_files_pass_verification_when_installed():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    test = load_idx_dataset("fashion-mnist", "test", folder)
    assert len(test) == 10_000 and torch.bincount(test.labels).tolist() == [1000] * 10


def test_wrong_checksum_is_refused(tmp_path):
    folder = make_idx_folder(tmp_path / "fake")
    with pytest.raises(DatasetError, match="SHA-256 does not match"):
        load_idx_dataset("fashion-mnist", "train", folder)


def test_truncated_and_corrupt_files(idx_dir):
    img = idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    img.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_idx_dataset("fashion-mnist", "train", idx_dir)
    img.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot decompress"):
        load_idx_dataset("fashion-mnist", "train", idx_dir)


def test_parse_idx_rejects_bad_magic():
    with pytest.raises(DatasetError, match="magic"):
        parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01x", "f")


def test_pixel_scaling_round_trips():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = to_unit_range(x)
    assert y.min().item() == -1.0 and y.max().item() == 1.0
    assert torch.equal(to_uint8(y), x)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("Red Things", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), colour).save(tmp_path / "train" / cls / f"{i}.png")
    ds = load_image_folder(tmp_path / "train")
    assert ds.images.shape == (6, 3, 32, 32)
    assert ds.class_names == ["red-things", "blue"] or ds.class_names == ["blue", "red-things"]
    red = ds.class_names.index("red-things")
    assert ds.images[ds.labels == red][:, 0].float().mean() == 255
    assert ds.aliases.get("Red Things") == "red-things"
    whole = load_dataset("folder", "train", tmp_path)
    assert len(whole) == 6


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no .png/.jpg"):
        load_image_folder(tmp_path)
