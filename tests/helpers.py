"""Builders the test packages share: tiny generators in a weights folder and a served app on
them (service), hand-made IDX files and tiny recipes (training), a tiny RGB image folder and a
tiny ResNet recipe, a three-class image folder and a tiny generator for the evaluation tests.
Fixtures that several packages use live in tests/conftest.py, those of the training tests in
tests/training/conftest.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import io
import struct
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from PIL import Image

from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_generator
from service.main import create_app
from service.settings import Settings
from training.data import IDX_FILES
from training.recipe import Recipe

# ---------------------------------------------------------------- service: tiny models, a served app

GRAY = "tiny-gray"  # 28x28, 1 channel, the ten Fashion-MNIST classes
RGB = "tiny-rgb"  # 32x32, 3 channels, four classes
UNCOND = "tiny-uncond"  # 28x28, unconditional
RGB_LABELS = ["red-thing", "green-thing", "blue-thing", "grey-thing"]


def write_model(folder: Path, seed: int, channels: int, image_size: int, labels: list[str],
                aliases: dict[str, str] | None = None, metrics: dict[str, Any] | None = None) -> None:
    torch.manual_seed(seed)
    args = dict(latent_dim=8, num_classes=len(labels), embed_dim=4, channels=channels,
                image_size=image_size, base_width=32)
    gen = ConditionalGenerator(**args)
    with torch.no_grad():  # non-trivial running stats, so eval-mode batch norm matters
        for m in gen.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    extra = {"metrics": metrics} if metrics else None
    save_generator(folder, gen, "dcgan", args, labels, aliases or {}, extra)


async def started(app: FastAPI) -> None:
    """Wait for the background model loading the lifespan started."""
    await app.state.loading


class Served:
    """An app running its lifespan, with an httpx client on it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient):
        self.app = app
        self.client = client

    @property
    def metrics(self):  # noqa: ANN201 - ServiceMetrics
        return self.app.state.metrics

    def batcher(self, model: str = GRAY):  # noqa: ANN201 - Batcher
        return self.app.state.registry.entries[model].batcher


def serve(settings: Settings):  # noqa: ANN201 - async context manager
    @asynccontextmanager
    async def run() -> AsyncIterator[Served]:
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            await started(app)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Served(app, client)

    return run()


def png_array(content: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) or (H, W, 3) uint8."""
    assert content[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return np.asarray(Image.open(io.BytesIO(content)))


def webp_array(content: bytes) -> np.ndarray:
    """WebP bytes -> (H, W, 3) uint8 (WebP has no grayscale: a gray image comes back as RGB)."""
    assert content[:4] == b"RIFF" and content[8:12] == b"WEBP", "not a WebP"
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def grid_tiles(grid: np.ndarray, n: int, size: int, nrow: int, padding: int, scale: int) -> list[np.ndarray]:
    """The n images of a grid made by service.rendering (rows filled left to right), each still
    upscaled by `scale`."""
    step, tiles = (size + padding) * scale, []
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = padding * scale + r * step, padding * scale + c * step
        tiles.append(grid[y : y + size * scale, x : x + size * scale])
    return tiles


# ---------------------------------------------------------------- training: IDX files, tiny recipes


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


def tiny_recipe(data_dir: Path, **overrides) -> Recipe:
    fields = dict(
        name="tiny", dataset="fashion-mnist", split="train", data_dir=str(data_dir),
        latent_dim=8, embed_dim=4, g_base_width=32, d_base_width=16, batch_size=16,
        n_critic=2, steps=6, lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.9), lr_decay="linear",
        ema_beta=0.9, log_every=2, checkpoint_every=100, keep_checkpoints=2, seed=7,
    )
    fields.update(overrides)
    return Recipe(**fields).validate()


# ---------------------------------------------------------------- colour: an RGB image folder, a tiny ResNet recipe


RGB_FOLDER_CLASSES = ["red-square", "green-square", "blue-square", "white-bar"]



def toy_image(rng: np.random.Generator, c: int, size: int = 32) -> np.ndarray:
    """Dark noise plus a bright shape whose place and colour depend on the class."""
    img = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
    dy, dx = rng.integers(0, 4, size=2)
    if c < 3:
        y, x = [(2, 2), (16, 4), (8, 16)][c]
        img[y + dy : y + dy + 12, x + dx : x + dx + 12, c] = 240
    else:
        img[12 + dy : 18 + dy, :, :] = 230
    return img


def make_rgb_folder(root: Path, per_class: int = 8, size: int = 32, seed: int = 0) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png, as CIFAR-10 arrives."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(RGB_FOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(toy_image(rng, c, size)).save(folder / f"{i:04d}.png")
    return root


def tiny_resnet_recipe(data_dir: Path, **overrides) -> Recipe:
    fields = dict(
        name="tiny-resnet", arch="resnet", dataset="folder", split="train", data_dir=str(data_dir),
        image_size=32, channels=3, latent_dim=16, g_base_width=16, d_base_width=16,
        conditioning="none", aux_classifier=True, batch_size=8, g_batch_size=16, n_critic=5,
        steps=4, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.9), lr_decay="linear", ema_beta=0.9,
        log_every=2, checkpoint_every=100, keep_checkpoints=2, seed=3, samples_per_epoch=False,
    )
    fields.update(overrides)
    return Recipe(**fields).validate()


# ---------------------------------------------------------------- evaluation: a 3-class image folder, a tiny generator


EVAL_CLASSES = ["alpha", "beta", "gamma"]
EVAL_PER_CLASS = 20


def _eval_image(rng: np.random.Generator, c: int) -> np.ndarray:
    """Noise plus a bright square whose corner and colour channel depend on the class."""
    img = rng.integers(0, 60, size=(28, 28, 3), dtype=np.uint8)
    y, x = [(2, 2), (14, 2), (8, 14)][c]
    dy, dx = rng.integers(0, 3, size=2)
    img[y + dy : y + dy + 10, x + dx : x + dx + 10, c] = 250
    return img


def make_image_folder(root: Path, per_class: int = EVAL_PER_CLASS, seed: int = 0) -> Path:
    """root/{train,test}/{alpha,beta,gamma}/*.png: RGB 28x28, `per_class` images each."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, name in enumerate(EVAL_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_eval_image(rng, c)).save(folder / f"{i}.png")
    return root


def save_tiny_generator(folder: Path, seed: int = 0) -> Path:
    """An untrained RGB 28x28 DCGAN generator for the EVAL_CLASSES, saved as a weights folder."""
    torch.manual_seed(seed)
    args = {"latent_dim": 8, "num_classes": 3, "embed_dim": 4, "channels": 3, "image_size": 28, "base_width": 32}
    save_generator(folder, ConditionalGenerator(**args), "dcgan", args, EVAL_CLASSES, {},
                   extra={"steps": 0, "data_checksum": "0" * 64})
    return folder


# ---------------------------------------------------------------- synchronising with the batcher, no sleeps


class ScriptedEngine:
    """A model runner as the batcher sees it (start / submit / close), with scripted timings: the
    warm-up reports `warm_s` for every size; each batch takes `real_s` of wall time (in a thread
    of its own) and answers each request with its image count, reporting `said_s` (default
    `warm_s`) and whether it ran `spread` over idle workers' cores. `lone_holds` is the count an
    engine process reports with its answers; a test may move it in `on_submit`."""

    pipeline_depth = 2
    latent_dim = 4
    can_mix_labels = False

    def __init__(self, name: str = "scripted", warm_s: float = 0.01, real_s: float = 0.0,
                 said_s: float | None = None, spread: bool = False):
        self.name = name
        self.warm_s, self.real_s, self.spread = warm_s, real_s, spread
        self.said_s = warm_s if said_s is None else said_s
        self.lone_holds = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"scripted-{name}")

    def start(self, batch_sizes: list[int]) -> concurrent.futures.Future[dict[int, float]]:
        future: concurrent.futures.Future[dict[int, float]] = concurrent.futures.Future()
        future.set_result(dict.fromkeys(batch_sizes, self.warm_s))
        return future

    def on_submit(self) -> None:
        """Called on each submit, before the batch runs."""

    def submit(self, z: torch.Tensor, labels: Any, labels_to: Any, mix: Any, renders: list[tuple[int, Any]],
               calm: bool = True) -> concurrent.futures.Future[tuple[list[tuple[bool, Any]], float, bool]]:
        self.on_submit()

        def run() -> tuple[list[tuple[bool, Any]], float, bool]:
            if self.real_s:
                time.sleep(self.real_s)
            return [(True, n) for n, _ in renders], self.said_s, self.spread

        return self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class HeldForward:
    """Wraps a runner's `run` so each forward waits for `release` (a threading.Event) once it has
    started: a test can then fill the queue into exactly the state it wants to check. `entered`
    counts forwards that have started and `rows` records each one's batch rows (its padded size).
    Use as a context manager, which releases on exit so a failing test never leaves the model's
    thread blocked; `hold=False` only counts."""

    def __init__(self, runner: Any, hold: bool = True):
        self.runner = runner
        self.real = runner.run
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.entered = 0
        self.rows: list[int] = []
        if not hold:
            self.release.set()

    def _run(self, z: Any, *args: Any, **kwargs: Any) -> Any:
        self.entered += 1
        self.rows.append(int(z.shape[0]))
        self.started.release()
        if not self.release.wait(60):
            raise RuntimeError("HeldForward was never released")
        return self.real(z, *args, **kwargs)

    def __enter__(self) -> HeldForward:
        self.runner.run = self._run
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.runner.run = self.real

    async def wait_started(self, timeout: float = 60) -> None:
        """Wait until one more forward has started (and is now held)."""
        ok = await asyncio.to_thread(self.started.acquire, True, timeout)
        assert ok, "no forward started"


async def until(condition: Any, timeout: float = 60, what: str = "") -> None:
    """Poll `condition()` on the event loop until it holds; the timeout is a hang guard, not a
    threshold any passing run comes near."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        await asyncio.sleep(0.005)
