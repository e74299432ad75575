"""GAN_DTYPE on the CPU: bfloat16 serves where the CPU has native bf16 (AVX512-BF16 or AMX) and is
refused, naming the setting, where it would be emulated; float16 needs CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore.devices import DeviceError
from service.inference import cpu_has_native_bf16, resolve_dtype
from tests.helpers import GRAY, png_array, serve

pytestmark = pytest.mark.anyio


def test_float16_on_cpu_is_refused() -> None:
    with pytest.raises(DeviceError, match="GAN_DTYPE=float16 needs a CUDA device"):
        resolve_dtype("float16", torch.device("cpu"))


def test_bfloat16_on_cpu_follows_the_hardware() -> None:
    if cpu_has_native_bf16():
        assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    else:
        with pytest.raises(DeviceError, match="GAN_DTYPE=bfloat16 needs a CPU with native bf16"):
            resolve_dtype("bfloat16", torch.device("cpu"))


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
async def test_bfloat16_serves_close_to_float32(make_settings) -> None:  # noqa: ANN001
    body = {"model": GRAY, "label": "bag", "n": 16, "seed": 5, "padding": 0}
    pictures = []
    for dtype in ("float32", "bfloat16"):
        async with serve(make_settings(dtype=dtype)) as s:
            r = await s.client.post("/generate", json=body)
            assert r.status_code == 200, r.text
            pictures.append(png_array(r.content).astype(int))
    diff = np.abs(pictures[0] - pictures[1])
    assert diff.mean() < 3.0  # grey levels: bf16 keeps 8 bits of mantissa; opt-in, documented


def test_bfloat16_on_cuda_needs_native_support_not_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.cuda.is_bf16_supported() says True on a T4 or V100 by default (emulated); the service
    # asks without emulation, so those GPUs are told to use float16 instead.
    asked: list[bool] = []

    def supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation  # a pre-Ampere GPU: only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(DeviceError, match="Tesla T4 has no native bf16"):
        resolve_dtype("bfloat16", torch.device("cuda"))
    assert asked == [False]
    assert resolve_dtype("float16", torch.device("cuda")) is torch.float16
