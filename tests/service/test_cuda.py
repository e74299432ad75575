"""On a CUDA machine: the same request gives the same image as on the CPU (up to floating-point
tolerance), half precision works, and batching does not change pixels. Skipped without a GPU."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from tests.helpers import GRAY, RGB, png_array, serve

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

REQUESTS = [
    (GRAY, {"label": "sneaker", "n": 16, "seed": 3, "padding": 0}),
    (RGB, {"label": "blue-thing", "n": 9, "seed": 8, "padding": 0}),
]


async def images(settings, model: str, body: dict) -> np.ndarray:  # noqa: ANN001
    async with serve(settings) as s:
        r = await s.client.post("/generate", json={**body, "model": model})
        assert r.status_code == 200, r.text
        assert s.app.state.registry.device.type == settings.device
        return png_array(r.content).astype(int)


@pytest.mark.parametrize(("model", "body"), REQUESTS)
async def test_cuda_matches_cpu(make_settings, model: str, body: dict) -> None:  # noqa: ANN001
    cpu = await images(make_settings(device="cpu"), model, body)
    gpu = await images(make_settings(device="cuda"), model, body)
    diff = np.abs(cpu - gpu)
    assert diff.max() <= 2 and (diff == 0).mean() > 0.95, (diff.max(), (diff == 0).mean())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
async def test_half_precision_is_close(make_settings, dtype: str) -> None:  # noqa: ANN001
    model, body = REQUESTS[1]
    ref = await images(make_settings(device="cuda"), model, body)
    half = await images(make_settings(device="cuda", dtype=dtype), model, body)
    assert np.abs(ref - half).mean() < 3.0  # grey levels; bf16 keeps only 8 bits of mantissa


async def test_cuda_batched_equals_alone(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(device="cuda", max_batch=32, max_wait_ms=200)) as s:
        target = {"label": "bag", "n": 3, "seed": 77}
        alone = await s.client.post("/generate", json=target)
        others = [s.client.post("/generate", json={"label": i, "n": 5, "seed": i}) for i in range(4)]
        res = await asyncio.gather(*others[:2], s.client.post("/generate", json=target), *others[2:])
        a, b = png_array(alone.content).astype(int), png_array(res[2].content).astype(int)
        assert np.abs(a - b).max() <= 1
        reg = s.metrics.registry
        assert reg.get_sample_value("gan_batch_size_count", {"model": GRAY}) == 2
        s.metrics.refresh()  # the gauge is read every few seconds; now, with the models on the GPU
        mem = reg.get_sample_value("gan_device_memory_bytes", {"device": "cuda"})
        assert mem is not None and mem > 0


async def test_cuda_graphs_match_eager(make_settings) -> None:  # noqa: ANN001
    """GAN_CUDA_GRAPHS replays one captured graph per padded batch size: same pixels as eager."""
    for model, body in REQUESTS:
        eager = await images(make_settings(device="cuda"), model, body)
        graphs = await images(make_settings(device="cuda", cuda_graphs=True), model, body)
        assert np.abs(eager - graphs).max() <= 1


async def test_cuda_engine_process_matches_in_process(make_settings) -> None:  # noqa: ANN001
    """An engine process holds its own CUDA context and stream: same pixels as the in-process runner."""
    model, body = REQUESTS[0]
    thread = await images(make_settings(device="cuda"), model, body)
    process = await images(make_settings(device="cuda", engine="process", cuda_graphs=True), model, body)
    assert np.abs(thread - process).max() <= 1


async def test_tf32_is_a_stated_policy(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(device="cuda", tf32=False)):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    async with serve(make_settings(device="cuda", tf32=True)):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("tf32", [False, True])
async def test_tf32_policy_reaches_the_engine_processes(make_settings, tf32: bool) -> None:  # noqa: ANN001
    # An engine process is spawned: it inherits none of the worker's flags, and torch's own
    # default (cuDNN TF32 on) would run "float32" convolutions in TF32 there.
    async with serve(make_settings(device="cuda", engine="process", tf32=tf32)) as s:
        engines = [e.runner for e in s.app.state.registry.entries.values() if e.runner is not None]
        assert engines and all(engine.tf32 == (tf32, tf32) for engine in engines)


async def test_cuda_memory_of_engine_processes_is_reported(make_settings) -> None:  # noqa: ANN001
    """With engine processes the worker holds no CUDA memory of its own: gan_device_memory_bytes
    adds what each engine reported with its last answer."""
    model, body = REQUESTS[0]
    async with serve(make_settings(device="cuda", engine="process")) as s:
        assert (await s.client.post("/generate", json={**body, "model": model})).status_code == 200
        s.metrics.refresh()
        mem = s.metrics.registry.get_sample_value("gan_device_memory_bytes", {"device": "cuda"})
        assert mem is not None and mem > 0


async def test_compile_is_not_paid_for_when_graphs_replay_the_eager_forward(weights_dir, caplog) -> None:  # noqa: ANN001
    from gancore.weights import load_generator
    from service.inference import Runner, RunnerOptions

    runner = Runner(load_generator(weights_dir / GRAY), torch.device("cuda"),
                    RunnerOptions(cuda_graphs=True, compile=True))
    try:
        assert not runner._compiled and "GAN_COMPILE is ignored" in caplog.text
    finally:
        runner.close()
