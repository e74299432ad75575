"""A short version of bench/overload.py: a real server driven past saturation for a few seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.overload import run_overload, write_tiny_model
from tests.helpers import GRAY, HeldForward, serve, until

QUEUE = 16  # images per worker; a tiny queue so two CPU cores saturate
WORKERS = 2  # the default on a CPU with two or more cores, stated so that the bound below is exact
TIMEOUT_S = 2.0


def test_overload_sheds_load_fast_and_recovers(tmp_path: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    f = run_overload(weights, tmp_path / "server.log", duration_s=5, clients=32, n=8, queue_size=QUEUE,
                     max_batch=8, max_wait_ms=5, timeout_s=TIMEOUT_S, workers=WORKERS)
    log = (tmp_path / "server.log").read_text()
    counts = f["counts"]
    assert counts["200"] > 0 and counts["503"] > 0, f  # saturated, and still serving
    assert counts["other"] == 0, (f, log)  # no 500, no dropped connection
    assert f["retry_after_s"]["min"] >= 1
    # Each worker bounds its own queue; gan_queue_depth sums the workers' queues.
    assert f["peak_queue_images"] <= WORKERS * QUEUE, f
    # That rejections wait for no batch is shown without a clock by the test below.
    # Server-side, every request (accepted or not) is answered within the deadline's bucket.
    assert f["server_side"]["bucket_s"] == 2.5 and f["server_side"]["share_within"] >= 0.99, f
    assert f["pss_mb"]["after"] - f["pss_mb"]["before"] < 100, f  # the tree's memory (PSS), not an RSS sum
    assert f["after"] == {"readyz": 200, "generate": 200, "queue_images": 0.0}, f


@pytest.mark.anyio
async def test_rejections_wait_for_no_batch(make_settings) -> None:  # noqa: ANN001
    """With the forward held and the queue full, twenty more requests all get 503 with
    Retry-After while the held and queued requests are still unanswered: a rejection never waits
    for a batch. Then the held work completes and the service takes requests again."""
    # The queued requests (15 images) stay smaller than the running batch (16), so they are not
    # dispatched beside it; the queue then has room for 1 image, and each rejected request asks 2.
    async with serve(make_settings(max_batch=2 * QUEUE, max_wait_ms=0, queue_size=QUEUE)) as s:
        batcher = s.batcher()
        with HeldForward(batcher.runner) as held:
            running = asyncio.create_task(s.client.post("/generate", json={"label": 1, "n": QUEUE}))
            await held.wait_started()
            queued = [asyncio.create_task(s.client.post("/generate", json={"label": 2, "n": n})) for n in (8, 7)]
            await until(lambda: batcher.queued_images == QUEUE - 1, what="a full queue")
            rejected = await asyncio.gather(*(s.client.post("/generate", json={"label": 3, "n": 2})
                                              for _ in range(20)))
            assert [r.status_code for r in rejected] == [503] * 20
            assert all(int(r.headers["retry-after"]) >= 1 for r in rejected)
            assert not running.done() and not any(q.done() for q in queued) and held.entered == 1
            held.release.set()
            assert [r.status_code for r in await asyncio.gather(running, *queued)] == [200] * 3
        assert (await s.client.post("/generate", json={"label": 3, "n": 1})).status_code == 200
        reg = s.metrics.registry
        assert reg.get_sample_value("gan_rejected_requests_total", {"model": GRAY, "reason": "queue_full"}) == 20
