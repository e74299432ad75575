"""Shared by every test package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gancore.labels import FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS
from service.settings import Settings
from tests.helpers import GRAY, RGB, RGB_LABELS, UNCOND, write_model


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core CPU: one thread avoids synchronisation overhead (about 10x).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- tiny served models (service, reliability)


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
            engine="thread",  # in-process: no child process per app; tests that wrap runner.run need it
        )
        values.update(overrides)
        return Settings(**values)

    return make
