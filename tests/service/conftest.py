"""Tiny randomly initialised generators in a temporary weights folder, and app/client fixtures."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from PIL import Image

from gancore.labels import FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS
from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_generator
from service.main import create_app
from service.settings import Settings

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


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    aliases = dict(zip(FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS, strict=True))
    write_model(root / GRAY, 1, 1, 28, list(FASHION_MNIST_SLUGS), aliases, metrics={"fid": 12.5})
    write_model(root / RGB, 2, 3, 32, RGB_LABELS)
    write_model(root / UNCOND, 3, 1, 28, [])
    return root


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_settings(weights_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            weights_dir=weights_dir, device="cpu", max_batch=8, max_wait_ms=2, max_n=64,
            max_steps=12, default_model=GRAY,
        )
        values.update(overrides)
        return Settings(**values)

    return make


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
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run() -> AsyncIterator[Served]:
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            await started(app)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Served(app, client)

    return run()


@pytest.fixture
async def served(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    async with serve(make_settings()) as s:
        yield s


def png_array(content: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) or (H, W, 3) uint8."""
    assert content[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return np.asarray(Image.open(io.BytesIO(content)))
