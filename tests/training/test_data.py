"""IDX loading, lookup order, verification and the messages for bad paths or files."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from gancore.images import to_uint8, to_unit_range
from gancore.labels import resolve_label
from tests.helpers import make_idx_folder
from training.data import (
    SOURCES,
    DatasetError,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    load_train_test,
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


@pytest.mark.filterwarnings("ignore:.*lacks.*downloading them:UserWarning")  # the folder passed over
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
    with pytest.raises(DatasetError, match="hold no images"):
        load_image_folder(tmp_path)


def test_unpacked_idx_files_are_read_like_the_gzipped_ones(idx_dir, tmp_path):
    """Unpacking the four archives leaves the names without .gz: the same data, the same checksum."""
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for gz in idx_dir.glob("*.gz"):
        (unpacked / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    a, b = load_idx_dataset("fashion-mnist", "all", idx_dir), load_idx_dataset("fashion-mnist", "all", unpacked)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.checksum == b.checksum


def test_unpacked_files_without_a_known_digest_say_how_to_use_them(tmp_path, monkeypatch):
    folder = make_idx_folder(tmp_path / "fake")
    for gz in list(folder.glob("*.gz")):
        (folder / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    monkeypatch.setattr("training.data.SOURCES", {  # as MNIST: only the archives' digests known
        "fashion-mnist": dataclasses.replace(SOURCES["fashion-mnist"], raw_sha256={})})
    with pytest.raises(DatasetError, match="gzip it back, or set verify_data=false"):
        load_idx_dataset("fashion-mnist", "train", folder)


def test_a_data_dir_without_the_files_is_passed_over_with_a_warning(tmp_path, monkeypatch, idx_dir):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(idx_dir))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.warns(UserWarning, match="lacks train-labels-idx1-ubyte.gz, t10k-images") as seen:
        data = load_idx_dataset("fashion-mnist", "train", tmp_path / "mine")
    assert len(data) == 64 and f"using {idx_dir} instead" in str(seen[0].message)


def make_class(folder: Path, n: int = 2, size: tuple[int, int] = (8, 8), value: int = 128) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", size, value).save(folder / f"{i}.png")


def test_a_flat_folder_is_training_data_only(tmp_path):
    make_class(tmp_path / "flat" / "a")
    make_class(tmp_path / "flat" / "b")
    assert len(load_dataset("folder", "train", tmp_path / "flat")) == 4
    assert len(load_dataset("folder", "all", tmp_path / "flat")) == 4
    with pytest.raises(DatasetError, match="no test/ folder, so no held-out images"):
        load_dataset("folder", "test", tmp_path / "flat")  # before: the training images, as "test"
    make_class(tmp_path / "split" / "train" / "a")
    with pytest.raises(DatasetError, match="has no test/ folder"):
        load_dataset("folder", "test", tmp_path / "split")  # before: one class named "train"
    with pytest.raises(DatasetError, match="has no test/ folder"):
        load_dataset("folder", "all", tmp_path / "split")


def test_train_and_test_with_other_classes_are_refused(tmp_path):
    """The classifier and evaluation load the two splits apart: test/{a,c} beside train/{a,b,c}
    gave c's test images b's id."""
    for cls in ("a", "b", "c"):
        make_class(tmp_path / "train" / cls)
    for cls in ("a", "c"):
        make_class(tmp_path / "test" / cls)
    with pytest.raises(DatasetError, match="only in train: b"):
        load_train_test("folder", tmp_path)
    with pytest.raises(DatasetError, match="only in train: b"):
        load_dataset("folder", "all", tmp_path)


def test_what_a_class_folder_holds_beside_its_images(tmp_path):
    from PIL import Image

    make_class(tmp_path / "cat")
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / "dir.png").mkdir()  # before: IsADirectoryError with a traceback
    make_class(tmp_path / "cat" / "more", value=200)  # read, as torchvision's ImageFolder does
    make_class(tmp_path / "cat" / "more" / ".hidden")  # hidden folders are not
    Image.new("L", (8, 8), 30).save(tmp_path / "cat" / "2.GIF")
    make_class(tmp_path / "__MACOSX" / "cat")  # a zip archive's resource forks: not a class
    make_class(tmp_path / "cat" / "__MACOSX")
    with pytest.warns(UserWarning, match=r"not read: 1 \.txt"):
        data = load_image_folder(tmp_path, channels=1)
    assert data.class_names == ["cat"] and len(data) == 5
    # sorted by path: cat/0.png, cat/1.png, cat/2.GIF, then cat/more/0.png, cat/more/1.png
    assert [int(img.flatten()[0]) for img in data.images] == [128, 128, 30, 200, 200]


def test_linked_folders_are_followed_once(tmp_path):
    make_class(tmp_path / "cat")
    make_class(tmp_path / "dog")
    (tmp_path / "cat" / "up").symlink_to(tmp_path / "cat", target_is_directory=True)  # a loop
    (tmp_path / "dog" / "cats").symlink_to(tmp_path / "cat", target_is_directory=True)
    data = load_image_folder(tmp_path, channels=1)
    assert data.class_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1, 1]  # the link's images are dog's, once


def test_an_empty_class_folder_is_an_error(tmp_path):
    make_class(tmp_path / "a")
    (tmp_path / "b").mkdir()  # would be a label of the model that no image trained
    with pytest.raises(DatasetError, match="class folder.s. b hold no images"):
        load_image_folder(tmp_path, channels=1)


def test_class_names_that_make_one_label_are_an_error_and_other_scripts_are_aliases(tmp_path):
    make_class(tmp_path / "one" / "Cat")
    make_class(tmp_path / "one" / "cat")
    with pytest.raises(DatasetError, match="Cat, cat -> 'cat'"):
        load_image_folder(tmp_path / "one", channels=1)
    for name in ("猫", "犬", "Éclair"):  # before: a traceback ('has no letters or digits'), and 'clair'
        make_class(tmp_path / "two" / name)
    data = load_image_folder(tmp_path / "two", channels=1)
    # labels stay ASCII (they travel in X-Label headers); the folder names are aliases
    assert data.class_names == ["eclair", "class-1", "class-2"]
    assert data.aliases == {"Éclair": "eclair", "犬": "class-1", "猫": "class-2"}
    assert resolve_label("猫", data.class_names, data.aliases) == 2


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # 0 .. 65,520
    (tmp_path / "a").mkdir()
    Image.fromarray(ramp).save(tmp_path / "a" / "deep.png")
    got = load_image_folder(tmp_path, channels=1).images[0, 0].numpy().astype(int)
    assert np.abs(got - np.round(ramp / 257)).max() <= 1  # before: 99.5% of pixels 255


def test_a_non_square_image_keeps_its_proportions(tmp_path):
    from PIL import Image

    img = np.zeros((40, 64), dtype=np.uint8)  # 64 wide, 40 high: a white bar on the left edge
    img[:, :6] = 255  # squashed to 32x32 it would be the first 3 columns
    (tmp_path / "a").mkdir()
    Image.fromarray(img).save(tmp_path / "a" / "wide.png")
    got = load_image_folder(tmp_path, image_size=32, channels=1).images[0, 0].numpy()
    assert got.shape == (32, 32) and got.max() < 128  # centre-cropped: the bar is outside


def test_transparent_pixels_are_laid_over_black(tmp_path):
    """A transparent pixel's stored colour is arbitrary (here white): it becomes black, and a
    half-transparent one half its colour; convert('RGB') alone kept the white."""
    from PIL import Image

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[0, :, 3] = 255  # first row opaque white, second half-transparent, the rest transparent
    rgba[1, :, 3] = 128
    (tmp_path / "a").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "alpha.png")
    got = load_image_folder(tmp_path).images[0, 0].numpy()
    assert got[0].tolist() == [255] * 4 and abs(int(got[1, 0]) - 128) <= 1 and got[2:].max() == 0
