"""Datasets held whole in memory as uint8 tensors: Fashion-MNIST and MNIST from IDX files,
and image folders (`root/<class>/*.png|jpg`, which is also how CIFAR-10 arrives).

IDX files are looked up in `--data-dir`, then `$FASHION_MNIST_DIR` / `$MNIST_DIR`, then the
Debian location, and only then downloaded (SHA-256 verified, written atomically). A `--data-dir`
that does not exist is an error, not a reason to look elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

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


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot decompress ({exc}); delete it and run again") from exc


def _verify(path: Path, raw: bytes, source: IdxSource) -> None:
    name = path.name
    known_raw = source.raw_sha256.get(name)
    if known_raw and hashlib.sha256(raw).hexdigest() == known_raw:
        return
    known_gz = source.gz_sha256.get(name)
    if known_gz and hashlib.sha256(path.read_bytes()).hexdigest() == known_gz:
        return
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
    """The first folder holding all four IDX files: data_dir, $ENV, system dir, cache (download).
    A data_dir given but missing is a DatasetError (a misspelt path would train on other data)."""
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
        if all((folder / f).is_file() for f in needed):
            return folder
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
        f"{dataset}: the four IDX .gz files ({', '.join(needed)}) were not found in {looked} "
        f"and could not be downloaded ({reason}). Fix: {hint}pass --data-dir FOLDER, "
        f"or set ${source.env_var}."
    )


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
        img_raw, lbl_raw = _read_gz(folder / img_name), _read_gz(folder / lbl_name)
        if verify:  # off only for hand-made test files (recipe field verify_data)
            _verify(folder / img_name, img_raw, source)
            _verify(folder / lbl_name, lbl_raw, source)
        digest.update(hashlib.sha256(img_raw).digest())
        digest.update(hashlib.sha256(lbl_raw).digest())
        x = parse_idx(img_raw, str(folder / img_name))
        y = parse_idx(lbl_raw, str(folder / lbl_name))
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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# Decoding CIFAR-10's 50,000 training JPEGs takes about 10 s (one CPU core); the decoded uint8
# array is kept in `<cache>/image-folders/<key>.npz` (about 1 s to read back), keyed by the files'
# names, sizes and mtimes, the image size and channels. Smaller folders decode in under a
# second and are not cached.
FOLDER_CACHE_MIN_IMAGES = 2000
FOLDER_CACHE_VERSION = 1


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


def load_image_folder(root: str | Path, image_size: int | None = None, channels: int = 3) -> ImageSet:
    """`root/<class>/*.png|jpg`; class names come from the sorted folder names.

    Folders of FOLDER_CACHE_MIN_IMAGES images or more are decoded once and then read from a
    cache file (see above); any change to a file's name, size or mtime makes a new entry.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; expected root/<class>/*.png|jpg")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class folders found; expected root/<class>/*.png|jpg")
    mode = {1: "L", 3: "RGB"}[channels]
    files = [(class_id, path) for class_id, cls in enumerate(classes)
             for path in sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)]
    if not files:
        raise DatasetError(f"{root}: class folders hold no .png/.jpg images")
    targets = [class_id for class_id, _ in files]
    cache = (_folder_cache_path(root, files, image_size, channels)
             if len(files) >= FOLDER_CACHE_MIN_IMAGES else None)
    cached = _read_folder_cache(cache, targets) if cache is not None else None
    if cached is not None:
        images, checksum = cached
    else:
        arrays = []
        digest = hashlib.sha256()
        for _, path in files:
            data = path.read_bytes()
            digest.update(hashlib.sha256(data).digest())
            try:
                with Image.open(path) as opened:
                    img = opened.convert(mode)
                    if image_size and img.size != (image_size, image_size):
                        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
                    arr = np.asarray(img, dtype=np.uint8)
            except OSError as exc:
                raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
            arrays.append(arr.reshape(arr.shape[0], arr.shape[1], channels))
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise DatasetError(f"{root}: images differ in size {sorted(sizes)[:3]}; pass an image size")
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
        checksum = digest.hexdigest()
        if cache is not None:
            _write_folder_cache(cache, images, targets, checksum)
    slugs = [labelnames.slugify(c) for c in classes]
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
        splits = ["train", "test"] if split == "all" else [split]
        if not all((root / s).is_dir() for s in splits):
            return load_image_folder(root, image_size, channels or 3)
        sets = [load_image_folder(root / s, image_size, channels or 3) for s in splits]
        first = sets[0]
        for other in sets[1:]:
            if other.class_names != first.class_names:
                raise DatasetError(f"{root}: train and test hold different classes")
        return ImageSet(
            name=root.name,
            images=torch.cat([s.images for s in sets]),
            labels=torch.cat([s.labels for s in sets]),
            class_names=first.class_names,
            aliases=first.aliases,
            checksum=hashlib.sha256("".join(s.checksum for s in sets).encode()).hexdigest(),
        )
    raise DatasetError(f"unknown dataset {name!r}; known: fashion-mnist, mnist, folder")
