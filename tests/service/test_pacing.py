"""Retry pacing: a connection that asks again at once after a 503 (overloaded) gets its next 503
held for GAN_REFUSAL_PAUSE_MS, each further one in a row twice as long up to
GAN_REFUSAL_MAX_PAUSE_MS; first refusals, other connections, clients that wait and accepted
requests are never held."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from service.pacing import MAX_TRACKED, RetryPacer
from tests.helpers import serve

pytestmark = pytest.mark.anyio

A, B = ("10.0.0.1", 40001), ("10.0.0.2", 40002)


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0  # every hold at its full length


def test_only_an_eager_repeat_on_the_same_connection_is_held() -> None:
    pacer = RetryPacer(pause_s=0.1, eager_s=0.03, rng=NoJitter())
    assert pacer.hold_for(A, now=10.0) == 0  # never refused before
    pacer.refused(A, now=10.0)
    assert pacer.hold_for(A, now=10.01) == pytest.approx(0.1)  # back 10 ms after its 503
    assert pacer.hold_for(B, now=10.01) == 0  # another connection
    assert pacer.hold_for(A, now=10.031) == 0  # waited the eager window: not held
    assert pacer.hold_for(None, now=10.01) == 0  # no client address (not a TCP connection)
    pacer.refused(A, now=10.2)
    assert pacer.hold_for(A, now=10.2) == pytest.approx(0.1)  # the window runs from the latest refusal


def test_eager_repeats_in_a_row_are_held_twice_as_long_up_to_the_cap() -> None:
    pacer = RetryPacer(pause_s=0.1, eager_s=0.03, max_pause_s=0.5, rng=NoJitter())
    pacer.refused(A, now=0.0)  # a first refusal, sent at once
    now, holds = 0.0, []
    for _ in range(6):  # a client that re-posts 1 ms after every 503 and is refused each time
        now += 0.001
        hold = pacer.hold_for(A, now=now)
        holds.append(hold)
        now += hold
        pacer.refused(A, now=now, held=hold > 0)
    assert holds == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert pacer.hold_for(B, now=now) == 0  # another connection has no streak
    # a client that waits out the eager window once is refused at once, and starts from the first pause
    now += 0.05
    assert pacer.hold_for(A, now=now) == 0
    pacer.refused(A, now=now, held=False)
    assert pacer.hold_for(A, now=now + 0.001) == pytest.approx(0.1)
    # without a cap above the pause, every hold is the pause (the behaviour before escalation)
    flat = RetryPacer(pause_s=0.1, eager_s=0.03, rng=NoJitter())
    flat.refused(A, now=0.0)
    now = 0.0
    for _ in range(4):
        now += 0.001
        assert flat.hold_for(A, now=now) == pytest.approx(0.1)
        now += 0.1
        flat.refused(A, now=now, held=True)


def test_holds_are_jittered_between_half_and_all_of_their_length() -> None:
    # clients refused together must not all come back together: the holds of 200 connections
    # refused at the same moment spread over the upper half of the pause
    pacer = RetryPacer(pause_s=0.1, eager_s=0.03, max_pause_s=1.0, rng=random.Random(0))
    clients = [("10.0.0.9", port) for port in range(200)]
    for client in clients:
        pacer.refused(client, now=0.0)
    holds = [pacer.hold_for(client, now=0.001) for client in clients]
    assert all(0.05 < h <= 0.1 for h in holds)
    assert max(holds) - min(holds) > 0.045 and len({round(h, 4) for h in holds}) > 150


def test_pause_zero_turns_pacing_off() -> None:
    pacer = RetryPacer(pause_s=0.0, eager_s=0.03)
    pacer.refused(A, now=1.0)
    assert pacer.hold_for(A, now=1.0) == 0 and not pacer._last


def test_memory_stays_bounded_and_keeps_the_recent_connections() -> None:
    pacer = RetryPacer(pause_s=0.1, eager_s=0.03)
    for i in range(MAX_TRACKED):  # old refusals: outside the eager window by the time of the next
        pacer.refused(("10.0.0.1", i), now=1.0)
    pacer.refused(A, now=5.0)
    pacer.refused(B, now=5.0)  # over the bound: the stale entries go
    assert len(pacer._last) == 2 and pacer.hold_for(A, now=5.01) > 0
    for i in range(MAX_TRACKED + 1):  # all recent: the oldest half goes, never the newest
        pacer.refused(("10.0.0.3", i), now=6.0 + i * 1e-7)
    assert len(pacer._last) <= MAX_TRACKED
    assert pacer.hold_for(("10.0.0.3", MAX_TRACKED), now=6.002) > 0


async def test_the_front_holds_an_eager_repeat_refusal_only(make_settings) -> None:  # noqa: ANN001
    # a queue of 12 images that counts 6 waiting: n=8 is refused at once ("queue full"), n=2 is served
    settings = make_settings(queue_size=12, refusal_pause_ms=150, refusal_eager_ms=5000, refusal_max_pause_ms=300)
    async with serve(settings) as s:
        s.batcher().queued_small_images = 6  # as if queued (a request larger than the whole queue is a 422)
        held = lambda: s.metrics.registry.get_sample_value("gan_refusals_held_total")  # noqa: E731
        other = httpx.AsyncClient(transport=httpx.ASGITransport(app=s.app, client=B), base_url="http://test")
        async with other:
            first = await s.client.post("/generate", json={"label": 1, "n": 8})
            assert first.status_code == 503 and first.json()["error"] == "overloaded"
            assert held() == 0  # a first refusal goes out at once

            started = time.perf_counter()
            again = await s.client.post("/generate", json={"label": 1, "n": 8})
            assert again.status_code == 503 and again.headers["retry-after"]
            # asked again at once: held (for half to all of the pause: the jitter)
            assert held() == 1 and time.perf_counter() - started >= 0.075

            started = time.perf_counter()  # and at once again: held up to twice as long (the cap here)
            assert (await s.client.post("/generate", json={"label": 1, "n": 8})).status_code == 503
            assert held() == 2 and time.perf_counter() - started >= 0.15

            assert (await other.post("/generate", json={"label": 1, "n": 8})).status_code == 503
            assert held() == 2  # another connection's first refusal is not held

            served = await s.client.post("/generate", json={"label": 1, "n": 2})
            assert served.status_code == 200 and held() == 2  # an accepted request is never held


async def test_pacing_off_holds_nothing(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(queue_size=12, refusal_pause_ms=0)) as s:
        s.batcher().queued_small_images = 6  # as above: n=8 finds the queue full
        for _ in range(3):
            assert (await s.client.post("/generate", json={"label": 1, "n": 8})).status_code == 503
        assert s.metrics.registry.get_sample_value("gan_refusals_held_total") == 0
