"""Retry pacing: a connection that asks again at once after a 503 (overloaded) gets its next 503
held for GAN_REFUSAL_PAUSE_MS; first refusals, other connections, clients that wait and accepted
requests are never held."""

from __future__ import annotations

import time

import httpx
import pytest

from service.pacing import MAX_TRACKED, RetryPacer
from tests.helpers import serve

pytestmark = pytest.mark.anyio

A, B = ("10.0.0.1", 40001), ("10.0.0.2", 40002)


def test_only_an_eager_repeat_on_the_same_connection_is_held() -> None:
    pacer = RetryPacer(pause_s=0.1, eager_s=0.03)
    assert pacer.hold_for(A, now=10.0) == 0  # never refused before
    pacer.refused(A, now=10.0)
    assert pacer.hold_for(A, now=10.01) == pytest.approx(0.1)  # back 10 ms after its 503
    assert pacer.hold_for(B, now=10.01) == 0  # another connection
    assert pacer.hold_for(A, now=10.031) == 0  # waited the eager window: not held
    assert pacer.hold_for(None, now=10.01) == 0  # no client address (not a TCP connection)
    pacer.refused(A, now=10.2)
    assert pacer.hold_for(A, now=10.2) == pytest.approx(0.1)  # the window runs from the latest refusal


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
    # queue of 4 images: n=8 is refused at once ("queue full"), n=2 is served
    settings = make_settings(queue_size=4, refusal_pause_ms=300, refusal_eager_ms=5000)
    async with serve(settings) as s:
        held = lambda: s.metrics.registry.get_sample_value("gan_refusals_held_total")  # noqa: E731
        other = httpx.AsyncClient(transport=httpx.ASGITransport(app=s.app, client=B), base_url="http://test")
        async with other:
            first = await s.client.post("/generate", json={"label": 1, "n": 8})
            assert first.status_code == 503 and first.json()["error"] == "overloaded"
            assert held() == 0  # a first refusal goes out at once

            started = time.perf_counter()
            again = await s.client.post("/generate", json={"label": 1, "n": 8})
            assert again.status_code == 503 and again.headers["retry-after"]
            assert held() == 1 and time.perf_counter() - started >= 0.3  # asked again at once: held

            assert (await other.post("/generate", json={"label": 1, "n": 8})).status_code == 503
            assert held() == 1  # another connection's first refusal is not held

            served = await s.client.post("/generate", json={"label": 1, "n": 2})
            assert served.status_code == 200 and held() == 1  # an accepted request is never held


async def test_pacing_off_holds_nothing(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(queue_size=4, refusal_pause_ms=0)) as s:
        for _ in range(3):
            assert (await s.client.post("/generate", json={"label": 1, "n": 8})).status_code == 503
        assert s.metrics.registry.get_sample_value("gan_refusals_held_total") == 0
