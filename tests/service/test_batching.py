"""The micro-batcher: one forward for concurrent requests, batched equals alone, overload,
deadlines, failing batches and draining on shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging

import numpy as np
import pytest
import torch

from service import batcher as batcher_module
from service.batcher import QueueFull, ShuttingDown
from tests.helpers import GRAY, HeldForward, png_array, serve, until

pytestmark = pytest.mark.anyio


def batch_stats(s, model: str = GRAY) -> tuple[float, float]:  # noqa: ANN001
    """(number of forwards, images in them) from the batch-size histogram."""
    reg = s.metrics.registry
    count = reg.get_sample_value("gan_batch_size_count", {"model": model}) or 0.0
    total = reg.get_sample_value("gan_batch_size_sum", {"model": model}) or 0.0
    return count, total


async def test_concurrent_requests_share_one_forward(make_settings) -> None:  # noqa: ANN001
    # max_wait is ten minutes: only a full batch can start a forward before the test's timeout.
    async with serve(make_settings(max_batch=6, max_wait_ms=10_000)) as s:
        s.batcher().max_wait_s = 600  # beyond the settings' bound
        bodies = [{"label": i % 10, "n": 1, "seed": i} for i in range(6)]
        responses = await asyncio.wait_for(
            asyncio.gather(*(s.client.post("/generate", json=b) for b in bodies)), 60)
        assert [r.status_code for r in responses] == [200] * 6
        assert batch_stats(s) == (1, 6)
        # a full batch does not wait for max_wait_ms: two requests of 3 make one forward at once
        responses = await asyncio.wait_for(
            asyncio.gather(*(s.client.post("/generate", json={"label": 1, "n": 3}) for _ in range(2))), 60)
        assert all(r.status_code == 200 for r in responses)
        assert batch_stats(s) == (2, 12)


async def test_no_wait_batches_what_arrives_during_a_forward(make_settings) -> None:  # noqa: ANN001
    """With max_wait_ms=0 (the default) a lone request starts at once. While a forward runs, the
    next batch is handed to the model's thread as soon as it is as large as the running one (so
    the thread never idles between batches), and what arrives after that forms the one after."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0)) as s:
        batcher = s.batcher()
        with HeldForward(batcher.runner) as held:
            first = asyncio.create_task(s.client.post("/generate", json={"label": 0, "n": 2, "seed": 1}))
            await held.wait_started()  # taken at once, not waiting for company
            assert batcher.queued_images == 0
            pending = []

            async def send_one(i: int, queued_after: int) -> None:
                pending.append(asyncio.create_task(
                    s.client.post("/generate", json={"label": i, "n": 1, "seed": 10 + i})))
                await until(lambda: batcher.queued_images == queued_after, what=f"request {i} queued")

            await send_one(0, 1)
            assert batcher.in_flight == 1  # smaller than the running batch (2): it waits, and grows
            pending.append(asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 1, "seed": 11})))
            await until(lambda: batcher.in_flight == 2, what="the next batch dispatched beside the running one")
            assert batcher.queued_images == 0  # as large as the running one: handed to the model's thread
            for i in range(2, 6):  # two batches in flight: the rest wait
                await send_one(i, i - 1)
            held.release.set()
            responses = await asyncio.gather(first, *pending)
        assert [r.status_code for r in responses] == [200] * 7
        assert batch_stats(s) == (3, 8)  # 2, then 1 + 1 (as large as the running one), then the other 4


async def test_batched_equals_alone(make_settings) -> None:  # noqa: ANN001
    """The same seed gives the same pixels whether the request ran alone or batched with others."""
    async with serve(make_settings(max_batch=32, max_wait_ms=0)) as s:
        target = {"label": "sneaker", "n": 3, "seed": 77}
        alone = await s.client.post("/generate", json=target)
        assert batch_stats(s) == (1, 3)
        with HeldForward(s.batcher().runner) as held:
            # A blocker holds the model's thread while the six requests queue behind it.
            # A full batch, so that the six (24 images) never make a batch as large to run beside it.
            blocker = asyncio.create_task(s.client.post("/generate", json={"label": 0, "n": 32, "seed": 0}))
            await held.wait_started()
            others = [s.client.post("/generate", json={"label": i, "n": 4, "seed": 1000 + i}) for i in range(4)]
            walk = s.client.get("/interpolate", params={"label": "bag", "label_to": "coat", "steps": 5})
            pending = [asyncio.create_task(c) for c in (others[0], others[1], s.client.post("/generate", json=target),
                                                         others[2], walk, others[3])]
            await until(lambda: s.batcher().queued_images == 3 + 16 + 5, what="six requests queued")
            held.release.set()
            responses = await asyncio.gather(*pending)
            assert (await blocker).status_code == 200
        assert all(r.status_code == 200 for r in responses)
        assert batch_stats(s) == (3, 3 + 32 + 3 + 16 + 5)  # the blocker, then one forward holding all six
        a, b = png_array(alone.content).astype(int), png_array(responses[2].content).astype(int)
        # Eval-mode rows are independent; allow one grey level for float reordering across batch sizes.
        assert np.abs(a - b).max() <= 1
        assert (a == b).mean() > 0.99


async def test_request_larger_than_a_batch_is_split(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(max_batch=8, max_wait_ms=1)) as s:
        r = await s.client.post("/generate", json={"label": 2, "n": 20, "seed": 4, "nrow": 20, "padding": 0})
        assert r.status_code == 200
        assert batch_stats(s) == (3, 20)  # 8 + 8 + 4
        small = await s.client.post("/generate", json={"label": 2, "n": 8, "seed": 4, "nrow": 8, "padding": 0})
        # a seed's rows do not depend on n, and a row's pixels not on its batch: the grid of 8 is
        # the first 8 tiles of the grid of 20, which ran as 8 + 8 + 4
        assert png_array(r.content).shape == (28, 20 * 28) and png_array(small.content).shape == (28, 8 * 28)
        first8, alone8 = png_array(r.content)[:, : 8 * 28].astype(int), png_array(small.content).astype(int)
        assert np.abs(first8 - alone8).max() <= 1 and (first8 == alone8).mean() > 0.99  # as above


async def test_full_queue_answers_503_at_once(make_settings) -> None:  # noqa: ANN001
    """The 503 comes while the queue is still full and the forward still held: it waited for no batch."""
    # queued (3 images) stays smaller than the running batch (4), so it is not dispatched beside it
    async with serve(make_settings(max_batch=8, max_wait_ms=0, queue_size=3)) as s:
        with HeldForward(s.batcher().runner) as held:
            running = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 3}))
            await held.wait_started()
            queued = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 2}))
            await until(lambda: s.batcher().queued_images == 2, what="a queued request")
            assert s.batcher().in_flight == 1
            r = await s.client.post("/generate", json={"label": 1, "n": 2})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == "overloaded"
            assert not running.done() and not queued.done() and s.batcher().queued_images == 2
            held.release.set()
            assert (await running).status_code == 200 and (await queued).status_code == 200
        reg = s.metrics.registry
        assert reg.get_sample_value("gan_rejected_requests_total", {"model": GRAY, "reason": "queue_full"}) == 1


async def test_a_full_queue_still_revalidates_cached_images(make_settings) -> None:  # noqa: ANN001
    """A cache's If-None-Match needs no forward: with the queue full, /generate and /interpolate
    answer 304 to their ETags (and 503 to everything that would need images)."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0, queue_size=3)) as s:
        grid = {"label": 1, "n": 2, "seed": 7}
        walk = {"label": 1, "steps": 2, "seed_from": 7}
        tags = [(await s.client.post("/generate", json=grid)).headers["etag"],
                (await s.client.get("/interpolate", params=walk)).headers["etag"]]
        with HeldForward(s.batcher().runner) as held:
            running = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 3}))
            await held.wait_started()
            queued = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 2}))
            await until(lambda: s.batcher().queued_images == 2, what="a queued request")  # 2 more: over 3
            cached = [await s.client.post("/generate", json=grid, headers={"If-None-Match": tags[0]}),
                      await s.client.get("/interpolate", params=walk, headers={"If-None-Match": tags[1]})]
            assert [r.status_code for r in cached] == [304, 304]
            assert [r.headers["etag"] for r in cached] == tags
            other = await s.client.post("/generate", json={**grid, "seed": 8}, headers={"If-None-Match": tags[0]})
            assert other.status_code == 503 and other.json()["error"] == "overloaded"
            held.release.set()
            assert (await running).status_code == 200 and (await queued).status_code == 200


async def test_deadline_gives_504(make_settings) -> None:  # noqa: ANN001
    # A lone request in a batch that would wait ten minutes to fill: only its deadline answers it.
    async with serve(make_settings(max_batch=8, max_wait_ms=10_000, request_timeout_s=0.05)) as s:
        s.batcher().max_wait_s = 600
        r = await s.client.post("/generate", json={"label": 1, "n": 1})
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        assert s.batcher().queued_images == 0  # its rows left the queue with the answer
        reg = s.metrics.registry
        assert reg.get_sample_value("gan_rejected_requests_total", {"model": GRAY, "reason": "deadline"}) == 1
        assert batch_stats(s) == (0, 0)
        # A full batch now starts a forward: the dropped request is skipped, not computed with it.
        full = await s.batcher().submit(torch.zeros(8, 8), torch.ones(8, dtype=torch.long), None, None,
                                        timeout_s=60, request_id="full")
        assert tuple(full.shape) == (8, 1, 28, 28)
        assert batch_stats(s) == (1, 8)
        assert s.batcher().queued_images == 0


async def test_deadline_passing_during_the_forward_gives_504_and_the_late_images_are_dropped(
        make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(max_batch=8, request_timeout_s=0.2)) as s:
        batcher = s.batcher()
        with HeldForward(batcher.runner) as held:
            late = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": 1}))
            await held.wait_started()
            r = await asyncio.wait_for(late, 30)  # answered at its deadline, the forward still held
            assert r.status_code == 504 and r.json()["error"] == "timeout"
            held.release.set()
        await until(lambda: batcher.in_flight == 0, what="the held batch to end")
        r = await s.client.post("/generate", json={"label": 1, "n": 1})  # the batcher carries on
        assert r.status_code == 200


async def test_failed_batch_fails_only_its_requests(make_settings, caplog) -> None:  # noqa: ANN001
    async with serve(make_settings()) as s:
        runner = s.batcher().runner
        real_run = runner.run
        calls = {"n": 0}

        def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("simulated failure")
            return real_run(*args, **kwargs)

        runner.run = flaky
        with caplog.at_level(logging.ERROR, logger="service"):
            bad = await s.client.post("/generate", json={"label": 1, "n": 2}, headers={"X-Request-ID": "req-42"})
        assert bad.status_code == 500
        assert bad.json()["error"] == "internal_error" and bad.json()["request_id"] == "req-42"
        assert "req-42" in caplog.text and "simulated failure" in caplog.text
        good = await s.client.post("/generate", json={"label": 1, "n": 2})
        assert good.status_code == 200  # the batcher kept running
        assert s.metrics.registry.get_sample_value("gan_batch_failures_total", {"model": GRAY}) == 1


async def test_shutdown_drains_queued_work(make_settings) -> None:  # noqa: ANN001
    # max_wait is ten minutes: only close() can answer these requests before the test's timeout.
    async with serve(make_settings(max_wait_ms=10_000)) as s:
        batcher = s.batcher()
        batcher.max_wait_s = 600
        z = torch.zeros(2, 8)
        labels = torch.tensor([1, 2])
        pending = [
            asyncio.create_task(batcher.submit(z, labels, None, None, timeout_s=600, request_id=f"r{i}"))
            for i in range(3)
        ]
        await until(lambda: batcher.queued_images == 6, what="three requests queued")
        await asyncio.wait_for(batcher.close(), 60)  # what the lifespan does on exit
        assert all(p.done() for p in pending)  # answered by close(), not by the batch timer
        results = await asyncio.gather(*pending)
        assert [tuple(r.shape) for r in results] == [(2, 1, 28, 28)] * 3
        with pytest.raises(ShuttingDown):
            await batcher.submit(z, labels, None, None, timeout_s=1, request_id="late")
        r = await s.client.post("/generate", json={"label": 1, "n": 1})
        assert r.status_code == 503


@pytest.mark.parametrize("engine", ["thread", "process"])
async def test_answered_requests_leave_no_cyclic_garbage(make_settings, engine: str) -> None:  # noqa: ANN001
    # An item that referenced itself (item -> parts list -> item) outlived its request until the
    # cyclic collector ran, with its tensors, render spec and future: seven objects a request,
    # about 13% of the in-process front's CPU at n=1 (bench.front; within noise through HTTP,
    # BENCHMARKS.md). Requests of one part and of several must be freed by reference counting
    # alone, with the forward in a thread or in an engine process.
    async with serve(make_settings(max_batch=8, max_wait_ms=0, engine=engine)) as s:
        await s.client.post("/generate", json={"label": 1, "n": 1, "seed": 0})  # warm every path once
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable stays in gc.garbage
        try:
            bodies = [{"label": i % 10, "n": 1 if i % 3 else 20, "seed": i} for i in range(12)]
            responses = await asyncio.gather(*(s.client.post("/generate", json=b) for b in bodies))
            assert [r.status_code for r in responses] == [200] * 12
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not {"_Item", "Tensor", "RenderSpec"} & set(left), sorted(set(left))


class LabelLog(HeldForward):
    """HeldForward that also records each forward's labels (its requests, by their label)."""

    def __init__(self, runner) -> None:  # noqa: ANN001
        super().__init__(runner)
        self.labels: list[list[int]] = []

    def _run(self, z, labels, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        self.labels.append(labels.tolist())
        return super()._run(z, labels, *args, **kwargs)


def post(s, body: dict) -> asyncio.Task:  # noqa: ANN001
    return asyncio.create_task(s.client.post("/generate", json=body))


async def hold_two_batches(s, held: HeldForward) -> list[asyncio.Task]:  # noqa: ANN001
    """Two batches of 8, one held on the model's thread and one dispatched behind it: the
    pipeline is full, so what is posted next stays queued until `held` is released."""
    blockers = [post(s, {"label": 0, "n": 8, "seed": i}) for i in range(2)]
    await held.wait_started()
    await until(lambda: s.batcher().in_flight == 2, what="two batches in flight")
    return blockers


async def post_queued(s, body: dict, queued: int, what: str = "queued") -> asyncio.Task:  # noqa: ANN001
    """Post `body` and wait until the batcher holds `queued` images in all."""
    task = post(s, body)
    await until(lambda: s.batcher().queued_images == queued, what=what)
    return task


async def test_small_requests_do_not_wait_behind_every_part_of_a_large_one(make_settings) -> None:  # noqa: ANN001
    """Two held forwards fill the pipeline; then a 24-image request (three batches of 8) and nine
    single images queue behind them. The singles go first, eight of them, then the large request's
    first part (it gets every other batch: no starvation), then the ninth single, then the rest of
    the large one. In arrival order the singles would have waited for all three parts."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0)) as s:
        batcher = s.batcher()
        with LabelLog(batcher.runner) as held:
            blockers = await hold_two_batches(s, held)
            large = await post_queued(s, {"label": 2, "n": 24, "seed": 5}, 24, "the large request queued")
            singles = [await post_queued(s, {"label": 7, "n": 1, "seed": 100 + i}, 25 + i, f"single {i} queued")
                       for i in range(9)]
            assert batcher.queued_small_images == 9
            held.release.set()
            answers = await asyncio.gather(*blockers, large, *singles)
        assert [a.status_code for a in answers] == [200] * 12
        assert held.labels == [[0] * 8, [0] * 8, [7] * 8, [2] * 8, [7], [2] * 8, [2] * 8]
        assert batcher.queued_images == batcher.queued_small_images == 0


@pytest.mark.parametrize(("batch_s", "order"), [
    (0.05, [[7], [9], [2] * 8, [2] * 8, [2] * 8]),  # long batches: the part waits, the single goes next
    (0.001, [[7], [2] * 8, [9], [2] * 8, [2] * 8]),  # GPU-fast ones: pipelined at once, as before
])
async def test_a_large_part_is_not_pipelined_while_single_images_are_coming(
        make_settings, batch_s: float, order: list[list[int]]) -> None:  # noqa: ANN001
    """A single image runs; a 24-image request (three batches of 8) arrives. With batches long
    enough to matter, its first part is not sent behind the running one while singles are coming,
    so the next single waits for the rest of one batch only; with a GPU-fast forward the part is
    pipelined at once (the hand-off would cost more than it saves)."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0)) as s:
        batcher = s.batcher()
        batcher._seconds = dict.fromkeys(batcher._seconds, batch_s)
        with LabelLog(batcher.runner) as held:
            first = post(s, {"label": 7, "n": 1, "seed": 1})
            await held.wait_started()
            large = post(s, {"label": 2, "n": 24, "seed": 5})
            if batch_s < 0.02:
                await until(lambda: batcher.in_flight == 2, what="the large request's first part pipelined")
            else:
                await until(lambda: batcher.queued_images == 24, what="the large request queued")
                await asyncio.sleep(0.3)
                assert batcher.in_flight == 1 and batcher.queued_images == 24  # held back
            single = post(s, {"label": 9, "n": 1, "seed": 2})
            await until(lambda: batcher.in_flight == 2, what="a second batch dispatched")
            held.release.set()
            answers = await asyncio.gather(first, large, single)
        assert [a.status_code for a in answers] == [200] * 3
        assert held.labels == order
        assert batcher.queued_images == batcher.queued_small_images == 0


@pytest.mark.parametrize(("slice_ms", "after"), [
    (50, [[2] * 4, [9], [2] * 4, [2] * 4, [2] * 4, [2] * 4]),  # slices of 4, alone in their batches
    (0, [[2] * 8, [9], [2] * 8, [2] * 4]),  # GAN_SLICE_MS=0: whole parts
])
async def test_a_large_request_runs_in_slices_while_single_images_are_coming(
        make_settings, slice_ms: float, after: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Forwards of 12.5 ms per image (a full batch of 8 takes 100 ms, over GAN_SLICE_MS): while
    singles are coming, a 20-image request runs in slices of 4 (the largest size within 50 ms),
    alone in their batches, with a single between two of them in turns; its answer is the grid it
    gets when it runs in whole parts, pixel for pixel."""
    monkeypatch.setattr(batcher_module, "SMALL_RECENT_S", 60.0)  # "singles are coming" however slow the machine
    body = {"label": 2, "n": 20, "seed": 5}
    async with serve(make_settings(max_batch=8, max_wait_ms=0, slice_ms=slice_ms)) as s:
        whole = await s.client.post("/generate", json=body)  # nothing small yet: parts of 8, 8 and 4
        batcher = s.batcher()
        batcher._seconds = {b: 0.0125 * b for b in batcher._seconds}
        with LabelLog(batcher.runner) as held:
            first = post(s, {"label": 7, "n": 1, "seed": 1})
            await held.wait_started()
            large = await post_queued(s, body, 20, "the large request queued")
            singles = [post(s, {"label": 9, "n": 1, "seed": 10})]
            await until(lambda: batcher.in_flight == 2, what="the single dispatched behind the running one")
            singles.append(await post_queued(s, {"label": 9, "n": 1, "seed": 11}, 21, "a second single queued"))
            held.release.set()
            answers = await asyncio.gather(first, large, *singles)
        assert [a.status_code for a in answers] == [200] * 4
        assert held.labels == [[7], [9], *after]
        assert answers[1].content == whole.content
        assert batcher.queued_images == batcher.queued_small_images == 0


async def test_a_queue_of_one_kind_is_served_in_arrival_order(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(max_batch=8, max_wait_ms=0)) as s:
        with LabelLog(s.batcher().runner) as held:
            blockers = await hold_two_batches(s, held)
            pending = [await post_queued(s, {"label": label, "n": n, "seed": i}, queued)  # small ones: none jumps
                       for i, (label, n, queued) in enumerate([(1, 5, 5), (2, 3, 8), (3, 6, 14), (4, 4, 18)])]
            pending += [await post_queued(s, {"label": label, "n": 12, "seed": i}, 18 + 12 * (i + 1))  # large, in order
                        for i, label in enumerate((5, 6))]
            held.release.set()
            answers = await asyncio.gather(*blockers, *pending)
        assert [a.status_code for a in answers] == [200] * 8
        assert held.labels[2:] == [[1] * 5 + [2] * 3, [3] * 6, [4] * 4, [5] * 8, [5] * 4, [6] * 8, [6] * 4]


async def test_a_small_request_is_admitted_by_its_own_wait(make_settings) -> None:  # noqa: ANN001
    """With a large request queued, a single image expects to wait for one batch of it, not all:
    admitted where arrival order would have refused it; a large one is still refused."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0)) as s:
        batcher = s.batcher()
        with HeldForward(batcher.runner) as held:
            blockers = await hold_two_batches(s, held)
            large = await post_queued(s, {"label": 2, "n": 24, "seed": 5}, 24, "the large request queued")
            loop = asyncio.get_running_loop()
            now = loop.time()
            batcher._seconds = dict.fromkeys(batcher._seconds, 1.0)  # every forward 1 s
            batcher._busy_until, batcher.wait_scale = now, 1.0
            assert batcher.admit(1, timeout_s=5.0, now=now) == pytest.approx(2.0)  # 8 of the large, then it
            assert batcher.expected_wait(1, now) == pytest.approx(4.0)  # what arrival order would wait
            with pytest.raises(QueueFull):
                batcher.admit(9, timeout_s=5.0, now=now)  # 33 images: 5 s, over 0.6 x 5 s
            held.release.set()
            answers = await asyncio.gather(*blockers, large)
        assert [a.status_code for a in answers] == [200] * 3


async def test_a_queue_full_of_grids_still_takes_a_single_image(make_settings) -> None:  # noqa: ANN001
    """The queue bound: a large request counts every queued image, a small one the small ones only
    (it goes first in turns), so grids filling the queue do not refuse a single image."""
    async with serve(make_settings(max_batch=8, max_wait_ms=0, queue_size=24)) as s:
        batcher = s.batcher()
        with HeldForward(batcher.runner) as held:
            blockers = await hold_two_batches(s, held)
            large = await post_queued(s, {"label": 2, "n": 24, "seed": 5}, 24, "the queue full of one grid")
            refused = await s.client.post("/generate", json={"label": 3, "n": 9})  # two batches: large
            assert refused.status_code == 503 and "queue full" in refused.json()["message"], refused.text
            # small requests up to the bound of their own: 24 small images
            small = [await post_queued(s, {"label": 7, "n": 8, "seed": i}, 24 + 8 * (i + 1), "a small request queued")
                     for i in range(3)]
            assert batcher.queued_images == 48 and batcher.queued_small_images == 24
            full = await s.client.post("/generate", json={"label": 7, "n": 1})
            assert full.status_code == 503 and "queue full" in full.json()["message"], full.text
            held.release.set()
            answers = await asyncio.gather(*blockers, large, *small)
        assert [a.status_code for a in answers] == [200] * 6
