"""Datasets held whole in memory as uint8 tensors: Fashion-MNIST and MNIST from IDX files,
and image folders (`root/<class>/*.png|jpg`, which is also how CIFAR-10 arrives).

IDX files are looked up in `--data-dir`, then `$FASHION_MNIST_DIR` / `$MNIST_DIR`, then the
Debian location, and only then downloaded (SHA-256 verified, written atomically). A `--data-dir`
that does not exist is an error, not a reason to look elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import urllib.request
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from gancore import labels as labelnames
from gancore.fileio import atomic_writer


class DatasetError(RuntimeError):
    """A dataset that cannot be found, fetched or read; the message says what to do."""


@dataclass(frozen=True)
class IdxSource:
    env_var: str
    system_dir: str
    mirrors: tuple[str, ...]
    # file -> SHA-256 of the official .gz, and of the decompressed IDX bytes where known (a
    # re-compressed copy, such as Debian's, differs in the .gz but not in what it holds).
    gz_sha256: dict[str, str]
    raw_sha256: dict[str, str] = field(default_factory=dict)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

SOURCES = {
    "fashion-mnist": IdxSource(
        env_var="FASHION_MNIST_DIR",
        system_dir="/usr/share/datasets/fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        gz_sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        raw_sha256={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    "mnist": IdxSource(
        env_var="MNIST_DIR",
        system_dir="/usr/share/datasets/mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        gz_sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
}

CLASS_NAMES = {
    "fashion-mnist": (labelnames.FASHION_MNIST_SLUGS, labelnames.FASHION_MNIST_OFFICIAL),
    "mnist": (labelnames.MNIST_SLUGS, labelnames.MNIST_OFFICIAL),
}


@dataclass
class ImageSet:
    """A whole dataset in memory: images (N, C, H, W) uint8 and labels (N,) int64."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]  # canonical slugs, index = class id
    aliases: dict[str, str]  # official name -> slug
    checksum: str  # SHA-256 over the source files' contents, recorded with exports

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])


# ---------------------------------------------------------------- IDX files


def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """Decode an IDX file's bytes (uint8 data only); raise DatasetError on a malformed file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{what}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{what}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise DatasetError(
            f"{what}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"file holds {len(raw) - header} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_path(folder: Path, name: str) -> Path | None:
    """The IDX file `name` (as published: gzipped) in `folder`, or its unpacked copy (the name
    without .gz, what unpacking the archives leaves); None when neither is there."""
    for path in (folder / name, folder / name.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


def _read_idx_file(path: Path) -> bytes:
    if path.suffix != ".gz":
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc})") from exc
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot decompress ({exc}); delete it and run again") from exc


def _verify(path: Path, raw: bytes, source: IdxSource, name: str) -> None:
    """`path` holds the official file `name` (its .gz, or the same bytes unpacked)."""
    known_raw = source.raw_sha256.get(name)
    if known_raw and hashlib.sha256(raw).hexdigest() == known_raw:
        return
    known_gz = source.gz_sha256.get(name)
    if path.suffix == ".gz" and known_gz and hashlib.sha256(path.read_bytes()).hexdigest() == known_gz:
        return
    if path.suffix != ".gz" and not known_raw:
        raise DatasetError(
            f"{path}: cannot verify an unpacked file of this dataset (only the official .gz files' SHA-256 "
            "is known here); gzip it back, or set verify_data=false (--set verify_data=false) to use it unchecked"
        )
    raise DatasetError(
        f"{path}: SHA-256 does not match the official file (corrupt or a different dataset); "
        "delete it to download a fresh copy, or point --data-dir at good files"
    )


def _download(name: str, dest_dir: Path, source: IdxSource) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    errors = []
    for mirror in source.mirrors:
        url = mirror + name
        try:
            with atomic_writer(dest, suffix=".part") as out, urllib.request.urlopen(url, timeout=60) as resp:
                digest = hashlib.sha256()
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                if digest.hexdigest() != source.gz_sha256[name]:  # raising here drops the temp file
                    raise DatasetError(f"{url}: SHA-256 {digest.hexdigest()} is not the official one")
            return dest
        except Exception as exc:  # noqa: BLE001 - try the next mirror, report all at the end
            errors.append(f"{url}: {exc}")
    raise DatasetError("download failed: " + "; ".join(errors))


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cgan-service"


def locate_idx_dir(dataset: str, data_dir: str | Path | None, download: bool = True) -> Path:
    """The first folder holding all four IDX files (gzipped as published, or unpacked): data_dir,
    $ENV, system dir, cache (download). A data_dir given but missing is a DatasetError (a
    misspelt path would train on other data); one that exists without the files is passed over
    with a warning naming the files it lacks and the folder used instead."""
    source = SOURCES[dataset]
    needed = [f for pair in IDX_FILES.values() for f in pair]
    candidates: list[Path] = []
    if data_dir:  # a folder asked for by name is used or refused, never silently passed over
        if not Path(data_dir).is_dir():
            raise DatasetError(f"data folder {data_dir} (--data-dir, or the recipe's data_dir) does not exist; "
                               f"fix the path, or leave it out to use ${source.env_var}, {source.system_dir} "
                               "or a download")
        candidates.append(Path(data_dir))
    if os.environ.get(source.env_var):
        candidates.append(Path(os.environ[source.env_var]))
    candidates.append(Path(source.system_dir))
    cache = default_cache_dir() / dataset
    candidates.append(cache)
    for folder in candidates:
        if all(_idx_path(folder, f) for f in needed):
            if data_dir and folder != Path(data_dir):
                _warn_passed_over(Path(data_dir), needed, f"using {folder} instead")
            return folder
    if data_dir and download:  # without a download, the error below says where it looked
        _warn_passed_over(Path(data_dir), needed, "downloading them")
    if download:
        try:
            for f in needed:
                if not (cache / f).is_file():
                    _download(f, cache, source)
            return cache
        except DatasetError as exc:
            reason = str(exc)
    else:
        reason = "download disabled"
    looked = ", ".join(str(c) for c in candidates)
    hint = "apt-get install dataset-fashion-mnist, " if dataset == "fashion-mnist" else ""
    raise DatasetError(
        f"{dataset}: the four IDX files ({', '.join(needed)}, gzipped or not) were not found in {looked} "
        f"and could not be downloaded ({reason}). Fix: {hint}pass --data-dir FOLDER, "
        f"or set ${source.env_var}."
    )


def _warn_passed_over(folder: Path, needed: list[str], then: str) -> None:
    lacking = [f for f in needed if not _idx_path(folder, f)]
    warnings.warn(f"{folder} (--data-dir) lacks {', '.join(lacking)} (gzipped or not); {then}", stacklevel=3)


def load_idx_dataset(
    dataset: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = True,
    verify: bool = True,
) -> ImageSet:
    """Fashion-MNIST or MNIST; split is 'train' (60k), 'test' (10k) or 'all' (70k combined)."""
    if dataset not in SOURCES:
        raise DatasetError(f"unknown IDX dataset {dataset!r}; known: {', '.join(SOURCES)}")
    if split not in ("train", "test", "all"):
        raise DatasetError(f"split must be train, test or all, got {split!r}")
    source = SOURCES[dataset]
    folder = locate_idx_dir(dataset, data_dir, download)
    parts = ["train", "test"] if split == "all" else [split]
    images, targets = [], []
    digest = hashlib.sha256()
    for part in parts:
        img_name, lbl_name = IDX_FILES[part]
        img_path, lbl_path = cast(Path, _idx_path(folder, img_name)), cast(Path, _idx_path(folder, lbl_name))
        img_raw, lbl_raw = _read_idx_file(img_path), _read_idx_file(lbl_path)
        if verify:  # off only for hand-made test files (recipe field verify_data)
            _verify(img_path, img_raw, source, img_name)
            _verify(lbl_path, lbl_raw, source, lbl_name)
        digest.update(hashlib.sha256(img_raw).digest())  # of the unpacked bytes: the same either way
        digest.update(hashlib.sha256(lbl_raw).digest())
        x = parse_idx(img_raw, str(img_path))
        y = parse_idx(lbl_raw, str(lbl_path))
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DatasetError(f"{folder}: {part} images {x.shape} and labels {y.shape} do not match")
        images.append(torch.from_numpy(x.copy()).unsqueeze(1))  # (N, 1, 28, 28)
        targets.append(torch.from_numpy(y.astype(np.int64)))
    slugs, official = CLASS_NAMES[dataset]
    labels = torch.cat(targets)
    if int(labels.max()) >= len(slugs) or int(labels.min()) < 0:
        raise DatasetError(f"{folder}: labels outside 0..{len(slugs) - 1}")
    return ImageSet(
        name=dataset,
        images=torch.cat(images),
        labels=labels,
        class_names=list(slugs),
        aliases=dict(zip(official, slugs, strict=True)),
        checksum=digest.hexdigest(),
    )


# ---------------------------------------------------------------- image folders

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}  # any case
# Not class folders: the resource forks that macOS adds to zip archives.
IGNORED_FOLDERS = {"__MACOSX"}
# Decoding CIFAR-10's 50,000 training JPEGs takes about 10 s (one CPU core); the decoded uint8
# array is kept in `<cache>/image-folders/<key>.npz` (about 1 s to read back), keyed by the files'
# names, sizes and mtimes, the image size and channels. Smaller folders decode in under a
# second and are not cached.
FOLDER_CACHE_MIN_IMAGES = 2000
FOLDER_CACHE_VERSION = 2  # 2: non-square images centre-cropped (were squashed), 16-bit ones scaled,
# transparency laid over black


def _folder_cache_path(root: Path, files: list[tuple[int, Path]], image_size: int | None,
                       channels: int) -> Path:
    h = hashlib.sha256(f"v{FOLDER_CACHE_VERSION} {root.resolve()} {image_size} {channels}\n".encode())
    for class_id, path in files:
        st = path.stat()
        h.update(f"{class_id} {path.relative_to(root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return default_cache_dir() / "image-folders" / f"{h.hexdigest()[:32]}.npz"


def _read_folder_cache(path: Path, targets: list[int]) -> tuple[torch.Tensor, str] | None:
    """(images (N, C, H, W) uint8, checksum) from a cache file, or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels, checksum = npz["images"], npz["labels"], str(npz["checksum"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"{path}: unreadable image-folder cache ({exc}); decoding the images again",
                      stacklevel=3)
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or not np.array_equal(labels, targets):
        warnings.warn(f"{path}: image-folder cache does not match the folder; decoding again", stacklevel=3)
        return None
    return torch.from_numpy(images), checksum


def _write_folder_cache(path: Path, images: torch.Tensor, targets: list[int], checksum: str) -> None:
    try:
        with atomic_writer(path) as fh:
            np.savez(fh, images=images.numpy(), labels=np.asarray(targets, dtype=np.int64),
                     checksum=np.asarray(checksum))
    except OSError as exc:  # a read-only or full cache folder costs speed, not correctness
        warnings.warn(f"cannot write the image-folder cache {path} ({exc})", stacklevel=3)


def _class_files(folder: Path, skipped: Counter[str]) -> list[Path]:
    """A class folder's image files, its sub-folders' included (as torchvision's ImageFolder
    reads them: `cat/indoor/1.jpg` is a cat), sorted by path; other files are counted in
    `skipped` by suffix. Names starting with '.' are passed over silently: .DS_Store, hidden
    folders, and the ._name files macOS writes beside each file on some disks; so is __MACOSX.
    Linked folders are followed once (a link back up the tree is not a loop)."""
    files = []
    seen: set[Path] = set()

    def walk(directory: Path) -> None:
        real = directory.resolve()
        if real in seen:
            return
        seen.add(real)
        for path in sorted(directory.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                if path.name not in IGNORED_FOLDERS:
                    walk(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
            else:
                skipped[path.suffix.lower() or "files without a suffix"] += 1

    walk(folder)
    return files


def _to_8_bit(img: Any) -> Any:
    """16-bit grey images (PIL modes I;16*, and I holding values above 255) scaled to 8 bits:
    convert('L') would clip them, nearly all to white."""
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode == "I"):
        return img
    arr = np.asarray(img)
    if img.mode == "I" and arr.max(initial=0) <= 255:
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L")
    return Image.fromarray((arr.astype(np.float64) / 257).round().clip(0, 255).astype(np.uint8), "L")


def _flatten_alpha(img: Any) -> Any:
    """An image with transparency laid over black (RGBA, LA, PA, or a palette with a transparent
    colour): convert() alone would keep whatever colour the transparent pixels happen to store."""
    from PIL import Image

    if img.mode not in ("RGBA", "LA", "PA") and not (img.mode == "P" and "transparency" in img.info):
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)


def _square(img: Any, size: int) -> Any:
    """Resize so the shorter side is `size`, then crop the centre to size x size (a non-square
    image keeps its proportions, as torchvision's Resize + CenterCrop would)."""
    from PIL import Image

    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    resized = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def _decode(path: Path, mode: str, image_size: int | None, digest: Any) -> np.ndarray:
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            img = _flatten_alpha(_to_8_bit(opened)).convert(mode)
            if image_size:
                img = _square(img, image_size)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read this image ({exc})") from exc
    digest.update(hashlib.sha256(data).digest())
    return arr


def _class_slugs(root: Path, classes: list[str]) -> list[str]:
    """Each class folder's slug (its label). A name with no ASCII letter or digit ('猫') gets
    'class-<id>', and its folder name stays an alias, so a request may still name it. Two folders
    with one slug ('Cat' and 'cat') could not be told apart by name, so they are an error."""
    slugs = []
    for class_id, name in enumerate(classes):
        try:
            slugs.append(labelnames.slugify(name))
        except ValueError:
            slugs.append(f"class-{class_id}")
    clashes = {slug: [c for c, s in zip(classes, slugs, strict=True) if s == slug] for slug in slugs}
    clashes = {slug: names for slug, names in clashes.items() if len(names) > 1}
    if clashes:
        listed = "; ".join(f"{', '.join(names)} -> {slug!r}" for slug, names in clashes.items())
        raise DatasetError(f"{root}: class folders whose names make the same label ({listed}); rename or merge them")
    return slugs


def load_image_folder(root: str | Path, image_size: int | None = None, channels: int = 3) -> ImageSet:
    """`root/<class>/**/*.png|jpg`; class names come from the sorted folder names, and the
    images in a class folder's sub-folders belong to that class.

    With `image_size`, each image is resized to it (a non-square one by its shorter side, then
    cropped to the centre). Folders of FOLDER_CACHE_MIN_IMAGES images or more are decoded once
    and then read from a cache file (see above); any change to a file's name, size or mtime
    makes a new entry.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; expected root/<class>/*.png|jpg")
    classes = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS)
    if not classes:
        raise DatasetError(f"{root}: no class folders found; expected root/<class>/*.png|jpg")
    slugs = _class_slugs(root, classes)
    mode = {1: "L", 3: "RGB"}[channels]
    skipped: Counter[str] = Counter()
    per_class = [_class_files(root / cls, skipped) for cls in classes]
    empty = [cls for cls, found in zip(classes, per_class, strict=True) if not found]
    if len(empty) == len(classes):
        raise DatasetError(f"{root}: class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if empty:  # a class with no images would still be a label of the model, never trained
        raise DatasetError(f"{root}: class folder(s) {', '.join(empty)} hold no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder")
    if skipped:
        warnings.warn(f"{root}: not read: " + ", ".join(f"{n} {what}" for what, n in sorted(skipped.items()))
                      + f" (images: {', '.join(sorted(IMAGE_SUFFIXES))})", stacklevel=3)
    files = [(class_id, path) for class_id, found in enumerate(per_class) for path in found]
    targets = [class_id for class_id, _ in files]
    cache = (_folder_cache_path(root, files, image_size, channels)
             if len(files) >= FOLDER_CACHE_MIN_IMAGES else None)
    cached = _read_folder_cache(cache, targets) if cache is not None else None
    if cached is not None:
        images, checksum = cached
    else:
        digest = hashlib.sha256()
        arrays = [_decode(path, mode, image_size, digest) for _, path in files]
        arrays = [a.reshape(a.shape[0], a.shape[1], channels) for a in arrays]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise DatasetError(f"{root}: images differ in size {sorted(sizes)[:3]}; pass an image size")
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
        checksum = digest.hexdigest()
        if cache is not None:
            _write_folder_cache(cache, images, targets, checksum)
    return ImageSet(
        name=root.name,
        images=images,
        labels=torch.tensor(targets, dtype=torch.int64),
        class_names=slugs,
        aliases={c: s for c, s in zip(classes, slugs, strict=True) if c != s},
        checksum=checksum,
    )


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    verify: bool = True,
) -> ImageSet:
    """One entry point for recipes: 'fashion-mnist', 'mnist' or 'folder' (data_dir/<split>/)."""
    if name in SOURCES:
        return load_idx_dataset(name, split, data_dir, verify=verify)
    if name == "folder":
        if not data_dir:
            raise DatasetError("dataset 'folder' needs --data-dir ROOT (ROOT/<class>/*.png|jpg)")
        root = Path(data_dir)
        if split not in ("train", "test", "all"):
            raise DatasetError(f"split must be train, test or all, got {split!r}")
        splits = ["train", "test"] if split == "all" else [split]
        if root.is_dir() and not any((root / s).is_dir() for s in ("train", "test")):
            # a flat ROOT/<class> folder: all of it is training data, and nothing is held out
            if split == "test":
                raise DatasetError(f"{root} has no test/ folder, so no held-out images: a flat ROOT/<class> folder is "
                                   "training data only. For test figures, lay it out as ROOT/train/<class> and "
                                   "ROOT/test/<class>")
            return load_image_folder(root, image_size, channels or 3)
        missing = [s for s in splits if not (root / s).is_dir()]
        if missing:
            raise DatasetError(f"{root} has no {missing[0]}/ folder (split {split!r}); expected ROOT/train/<class> "
                               "and ROOT/test/<class>, or a flat ROOT/<class> for training only")
        sets = [load_image_folder(root / s, image_size, channels or 3) for s in splits]
        first = sets[0]
        for other in sets[1:]:
            check_same_classes(first, other, f"{root}: train and test")
        return ImageSet(
            name=root.name,
            images=torch.cat([s.images for s in sets]),
            labels=torch.cat([s.labels for s in sets]),
            class_names=first.class_names,
            aliases=first.aliases,
            checksum=hashlib.sha256("".join(s.checksum for s in sets).encode()).hexdigest(),
        )
    raise DatasetError(f"unknown dataset {name!r}; known: fashion-mnist, mnist, folder")


def check_same_classes(train: ImageSet, test: ImageSet, what: str) -> None:
    """Class ids are positions in class_names: two splits whose classes differ would label one
    split's images with the other's classes."""
    if train.class_names != test.class_names:
        only_train = sorted(set(train.class_names) - set(test.class_names))
        only_test = sorted(set(test.class_names) - set(train.class_names))
        detail = "; ".join(part for part in (f"only in train: {', '.join(only_train)}" if only_train else "",
                                             f"only in test: {', '.join(only_test)}" if only_test else "") if part)
        raise DatasetError(f"{what} hold different classes ({detail or 'in another order'})")


def load_train_test(name: str, data_dir: str | Path | None = None, image_size: int | None = None,
                    channels: int | None = None) -> tuple[ImageSet, ImageSet]:
    """The train and test splits of one dataset, with the same classes in the same order."""
    train = load_dataset(name, "train", data_dir, image_size=image_size, channels=channels)
    test = load_dataset(name, "test", data_dir, image_size=image_size, channels=channels)
    check_same_classes(train, test, f"{data_dir or name}: the train and test splits")
    return train, test
