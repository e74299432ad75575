"""Batch sizes: every batch runs padded to the next warmed-up size (padding rows are computed and
thrown away), so the grid of sizes decides how much compute padding wastes. Powers of two on CUDA
and with torch.compile (a graph or a compilation per size), a finer grid on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from gancore.weights import load_generator
from service.inference import Runner, RunnerOptions, interpolate_seconds, timed_sizes
from service.settings import Settings
from tests.helpers import GRAY, HeldForward, png_array, serve

pytestmark = pytest.mark.anyio


def test_the_grid_follows_the_device_and_compile() -> None:
    fine = [*range(1, 17), 18, 20, 22, 24, 26, 28, 30, 32, 36, 40, 44, 48, 52, 56, 60, 64]
    assert Settings().batch_sizes("cpu") == fine
    assert Settings().batch_sizes("cuda") == [1, 2, 4, 8, 16, 32, 64]
    assert Settings(compile=True).batch_sizes("cpu") == [1, 2, 4, 8, 16, 32, 64]  # a compilation per size
    assert Settings(batch_grid="fine").batch_sizes("cuda") == fine
    assert Settings(batch_grid="POWERS", max_batch=48).batch_sizes("cpu") == [1, 2, 4, 8, 16, 32, 48]
    assert Settings(batch_grid="every", max_batch=5).batch_sizes("cuda") == [1, 2, 3, 4, 5]
    assert Settings(max_batch=40).batch_sizes("cpu")[-3:] == [32, 36, 40]
    with pytest.raises(ValidationError):
        Settings(batch_grid="exact")


@pytest.mark.parametrize("max_batch", [1, 7, 64, 100, 4096])
def test_a_fine_grid_pads_a_batch_by_at_most_an_eighth(max_batch: int) -> None:
    sizes = Settings(max_batch=max_batch).batch_sizes("cpu")
    assert sizes == sorted(set(sizes)) and sizes[0] == 1 and sizes[-1] == max_batch
    for n in range(1, max_batch + 1):
        padded = next(s for s in sizes if s >= n)
        assert padded - n <= n / 8, (n, padded)


async def test_a_cpu_batch_pads_to_the_fine_grid_and_gives_the_pixels_of_any_other(make_settings) -> None:  # noqa: ANN001
    body = {"label": "bag", "n": 11, "seed": 5}
    answers = {}
    for grid, rows in (("auto", [11]), ("powers", [16])):  # max_batch 16: the fine grid is every size
        async with serve(make_settings(max_batch=16, max_n=16, batch_grid=grid)) as s:
            with HeldForward(s.batcher().runner, hold=False) as seen:
                r = await s.client.post("/generate", json=body)
            assert r.status_code == 200, r.text
            assert seen.rows == rows
            answers[grid] = png_array(r.content).astype(int)
    difference = np.abs(answers["auto"] - answers["powers"])
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99  # as batched against alone


def test_warm_up_runs_every_size_and_times_the_powers_of_two(weights_dir: Path) -> None:
    sizes = Settings(max_batch=20).batch_sizes("cpu")  # 1-16, 18, 20
    runner = Runner(load_generator(weights_dir / GRAY), torch.device("cpu"), RunnerOptions())
    with HeldForward(runner, hold=False) as seen:
        seconds = runner.warmup(sizes)
    assert sorted(seconds) == sizes and all(s > 0 for s in seconds.values())
    # one first use per size, a second (timed) run for 1, 2, 4, 8, 16 and the largest, 20
    assert sorted(seen.rows) == sorted(sizes + [1, 2, 4, 8, 16, 20])
    assert min(seconds[8], seconds[16]) <= seconds[12] <= max(seconds[8], seconds[16])


def test_untimed_sizes_are_interpolated_between_their_timed_neighbours() -> None:
    assert timed_sizes(Settings().batch_sizes("cpu")) == {1, 2, 4, 8, 16, 32, 64}
    assert timed_sizes(Settings(max_batch=100).batch_sizes("cpu")) == {1, 2, 4, 8, 16, 32, 64, 100}
    measured = {1: 0.003, 8: 0.010, 16: 0.026, 20: 0.030}
    seconds = interpolate_seconds(measured, [1, 3, 8, 12, 16, 18, 20])
    assert seconds[1] == 0.003 and seconds[16] == 0.026  # measured sizes keep their time
    assert seconds[12] == pytest.approx(0.018) and seconds[18] == pytest.approx(0.028)
    assert seconds[3] == pytest.approx(0.003 + 2 / 7 * 0.007)
    assert interpolate_seconds({4: 0.01, 8: 0.02}, [2, 4, 8])[2] == 0.01  # below the first timed size: its time


def test_a_closed_runner_is_freed_although_start_up_froze_it(weights_dir: Path) -> None:
    # python -m service freezes start-up's objects (gc.freeze); a Runner is in a reference cycle
    # (its forward is its own bound method), so one replaced by a reload stayed for good, weights
    # and CUDA graphs with it, unless close() lets go of them.
    import gc
    import weakref

    runner = Runner(load_generator(weights_dir / GRAY), torch.device("cpu"), RunnerOptions())
    runner.warmup([1, 2])
    model = weakref.ref(runner.model)
    gone = weakref.ref(runner)
    gc.collect()
    gc.freeze()
    try:
        runner.close()
        del runner
        assert gone() is None and model() is None
    finally:
        gc.unfreeze()


def test_compiling_allows_a_recompile_per_batch_size() -> None:
    # Dynamo's recompile limit (8) is per code object, and every Runner's forward shares one:
    # without raising it, sizes past the eighth (and later models' sizes) would silently run eager.
    import torch._dynamo.config as dynamo

    from service.inference import allow_recompiles

    before = dynamo.recompile_limit, dynamo.accumulated_recompile_limit
    try:
        allow_recompiles(9)
        allow_recompiles(7)
        assert (dynamo.recompile_limit, dynamo.accumulated_recompile_limit) == (before[0] + 16, before[1] + 16)
    finally:
        dynamo.recompile_limit, dynamo.accumulated_recompile_limit = before


@pytest.mark.parametrize(("error", "fatal"), [
    (RuntimeError("CUDA error: device-side assert triggered"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"), True),
    (RuntimeError("CUDA error: out of memory"), False),  # cudaHostAlloc for pinned memory: not sticky
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), False),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"), False),
    (ValueError("a bad label"), False),
])
def test_only_errors_that_break_a_cuda_context_take_the_process_out(error: Exception, fatal: bool) -> None:
    from service.inference import is_device_error

    assert is_device_error(error) is fatal
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, RuntimeError):  # newer torch raises this type
        try:
            as_raised = accelerator_error(str(error))
        except TypeError:  # constructor differs in this torch
            return
        assert is_device_error(as_raised) is fatal
    assert not is_device_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_closing_a_runner_survives_a_broken_cuda_context(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(load_generator(weights_dir / GRAY), torch.device("cpu"), RunnerOptions())

    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    runner._cuda = True  # as on a GPU whose context the error that closes it has broken
    runner.close()  # logs, does not raise
    assert runner.model is None
