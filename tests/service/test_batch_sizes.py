"""Batch sizes: every batch runs padded to the next warmed-up size (padding rows are computed and
thrown away), so the grid of sizes decides how much compute padding wastes. Powers of two on CUDA
and with torch.compile (a graph or a compilation per size), a finer grid on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.helpers import HeldForward, png_array, serve

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
