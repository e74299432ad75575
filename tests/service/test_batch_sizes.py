"""Batch sizes: on a CPU a batch runs at its own size (padding computes images that are thrown
away), padded to the next warmed-up size where the forward needs fixed shapes; the expected time
of a batch between two warmed-up sizes is interpolated, and what such a batch measures moves both."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.batcher import EMA_WEIGHT, Batcher
from service.settings import Settings
from tests.helpers import png_array, serve

pytestmark = pytest.mark.anyio


class RowsSeen:
    """Wraps a runner's `run` to record the rows of every forward."""

    def __init__(self, runner: Any):
        self.runner, self.real, self.rows = runner, runner.run, []

    def __enter__(self) -> RowsSeen:
        self.runner.run = self._run
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.run = self.real

    def _run(self, z: Any, *args: Any, **kwargs: Any) -> Any:
        self.rows.append(int(z.shape[0]))
        return self.real(z, *args, **kwargs)


async def test_a_cpu_batch_runs_at_its_own_size_and_padded_ones_give_the_same_pixels(make_settings) -> None:  # noqa: ANN001
    body = {"label": "bag", "n": 3, "seed": 5}
    answers = {}
    for pad, rows in (("auto", [3]), (True, [4])):
        async with serve(make_settings(max_batch=8, pad_batches=pad)) as s:
            assert s.batcher().pad is (pad is True)
            with RowsSeen(s.batcher().runner) as seen:
                r = await s.client.post("/generate", json=body)
            assert r.status_code == 200, r.text
            assert seen.rows == rows  # 3 images: 3 rows on a CPU, 4 (the next warmed-up size) padded
            answers[pad] = png_array(r.content).astype(int)
    difference = np.abs(answers["auto"] - answers[True])
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99  # as batched against alone


def test_padding_follows_the_device_and_the_fixed_shape_settings() -> None:
    assert Settings().pads_batches("cpu") is False
    assert Settings().pads_batches("cuda") is True
    assert Settings(compile=True).pads_batches("cpu") is True
    assert Settings(cuda_graphs=True).pads_batches("cpu") is False  # graphs are CUDA's only
    assert Settings(pad_batches=True).pads_batches("cpu") is True
    assert Settings(pad_batches=False).pads_batches("cuda") is False
    assert Settings(pad_batches="AUTO").pad_batches == "auto"
    for fixed in ("compile", "cuda_graphs"):
        with pytest.raises(ValidationError, match="needs padded batches"):
            Settings(pad_batches=False, **{fixed: True})


class Idle:
    """A runner that is never called: the tests below ask the batcher's arithmetic only."""

    name = "idle"
    pipeline_depth = 2
    latent_dim = 4


def batcher(pad: bool) -> Batcher:
    b = Batcher(Idle(), max_batch=8, max_wait_s=0, queue_size=100, batch_sizes=[1, 2, 4, 8], pad=pad)  # type: ignore[arg-type]
    b._seconds = {1: 1.0, 2: 2.0, 4: 3.0, 8: 5.0}
    return b


def test_the_time_of_a_batch_between_warmed_up_sizes_is_interpolated() -> None:
    b = batcher(pad=False)
    assert [b.batch_seconds(n) for n in (1, 2, 3, 4, 5, 6, 8)] == [1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0]
    padded = batcher(pad=True)  # padded, a batch takes the time of the size it runs at
    assert [padded.batch_seconds(n) for n in (3, 5, 6)] == [3.0, 5.0, 5.0]


def test_a_batch_between_warmed_up_sizes_moves_both_by_their_nearness() -> None:
    b = batcher(pad=False)
    b._learn(6, 8.0)  # expected 4.0: twice as slow, halfway between 4 and 8
    assert b._seconds[4] == pytest.approx(3.0 * (1 + EMA_WEIGHT * 0.5))
    assert b._seconds[8] == pytest.approx(5.0 * (1 + EMA_WEIGHT * 0.5))
    assert (b._seconds[1], b._seconds[2]) == (1.0, 2.0)
    b._learn(5, 3.5 * (1 + EMA_WEIGHT * 0.5))  # what is expected now: nothing moves
    assert b._seconds[4] == pytest.approx(3.0 * (1 + EMA_WEIGHT * 0.5))
    b._learn(2, 4.0)  # a warmed-up size: its own moving average, as a padded batch's
    assert b._seconds[2] == pytest.approx((1 - EMA_WEIGHT) * 2.0 + EMA_WEIGHT * 4.0)
    assert b._seconds[1] == 1.0
