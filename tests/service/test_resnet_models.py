"""The service serves ResNet colour models from their config.json alone: RGB PNG grids,
interpolation between classes through the class codes, and an unconditional 96x96 model."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from asgi_lifespan import LifespanManager
from PIL import Image

from gancore.networks.resnet import ConditionalBatchNorm2d, ResNetGenerator
from gancore.weights import save_generator
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio

COLOUR = "tiny-resnet-rgb"  # 32x32, three classes
WIDE = "tiny-resnet-96"  # 96x96, unconditional
LABELS = ["cat", "dog", "ship"]


def write_resnet(folder: Path, seed: int, image_size: int, labels: list[str]) -> None:
    torch.manual_seed(seed)
    args = dict(latent_dim=8, num_classes=len(labels), channels=3, image_size=image_size, width=8)
    gen = ResNetGenerator(**args)
    with torch.no_grad():  # trained-looking statistics and class gains
        for m in gen.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, ConditionalBatchNorm2d) and m.num_classes:
                m.gain.uniform_(0.2, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    save_generator(folder, gen, "resnet", args, labels, {})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    write_resnet(root / COLOUR, 1, 32, LABELS)
    write_resnet(root / WIDE, 2, 96, [])
    return root


@pytest.fixture
async def client(weights_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(weights_dir=weights_dir, device="cpu", max_batch=8, max_wait_ms=2, max_n=16,
                        max_steps=8, default_model=COLOUR)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        await app.state.loading
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def png(content: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(content)) as img:
        return img.mode, np.asarray(img)


async def test_generate_gives_an_rgb_png_grid(client: httpx.AsyncClient) -> None:
    r = await client.post("/generate", json={"label": "dog", "n": 4, "nrow": 2, "seed": 3, "padding": 0})
    assert r.status_code == 200, r.text
    mode, img = png(r.content)
    assert mode == "RGB" and img.shape == (64, 64, 3)
    assert img.std() > 0
    other = await client.post("/generate", json={"label": "ship", "n": 4, "nrow": 2, "seed": 3, "padding": 0})
    assert other.content != r.content  # the class changes the image through its gains and biases


async def test_models_lists_the_resnet_with_its_labels(client: httpx.AsyncClient) -> None:
    r = await client.get("/models")
    assert r.status_code == 200, r.text
    assert COLOUR in r.text and WIDE in r.text and "ship" in r.text


async def test_interpolation_between_classes(client: httpx.AsyncClient) -> None:
    base = {"label": "cat", "steps": 4, "seed_from": 2, "padding": 0}
    same = await client.get("/interpolate", params=base)
    walk = await client.get("/interpolate", params={**base, "label_to": "ship"})
    assert same.status_code == walk.status_code == 200, walk.text
    (mode, a), (_, b) = png(same.content), png(walk.content)
    assert mode == "RGB" and a.shape == (32, 4 * 32, 3)
    assert np.array_equal(a[:, :32], b[:, :32])  # first frame: the same class and latent
    assert not np.array_equal(a[:, -32:], b[:, -32:])  # last frame: the other class


async def test_unconditional_96_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/generate", json={"model": WIDE, "n": 2, "nrow": 2, "padding": 0})
    assert r.status_code == 200, r.text
    mode, img = png(r.content)
    assert mode == "RGB" and img.shape == (96, 192, 3)
    i = await client.get("/interpolate", params={"model": WIDE, "steps": 3, "padding": 0})
    assert i.status_code == 200, i.text
    assert png(i.content)[1].shape == (96, 3 * 96, 3)
