"""A client that hangs up takes its queued work with it: its rows are dropped before their forward
and counted in gan_cancelled_total, so the next client does not wait behind images nobody will
read. Through a real `python -m service` on the shipped model, as a user would see it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bench.overload import ROOT, start_server

GIVE_UP_S = 0.2
CLIENTS, N = 20, 256  # 5,120 images: about 5 s of forwards on two CPU cores


def cancelled_total(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("gan_cancelled_total{"))


def test_hung_up_requests_are_not_generated(tmp_path: Path) -> None:
    # One worker, so that one queue holds every request: with several, the new request could land
    # on a worker that got none of the abandoned ones and be answered fast with or without
    # cancellation.
    with start_server(ROOT / "weights", tmp_path / "server.log", default_model="fashion-mnist-cwgangp",
                      max_n=N, queue_size=100_000, request_timeout_s=60, workers=1) as server:

        async def scenario() -> tuple[float, float]:
            async def impatient(i: int) -> None:
                async with httpx.AsyncClient(base_url=server.base, timeout=GIVE_UP_S) as client:
                    try:
                        await client.post("/generate", json={"label": i % 10, "n": N, "seed": i})
                    except httpx.TimeoutException:
                        pass  # gave up: the connection is closed

            await asyncio.gather(*(impatient(i) for i in range(CLIENTS)))
            async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
                started = time.monotonic()
                answer = await client.post("/generate", json={"label": 1, "n": 1, "seed": 1})
                waited = time.monotonic() - started
                assert answer.status_code == 200, answer.text
                # the count is kept by each request's own handler as it notices the hang-up:
                # read it until it settles (a hang guard, not a threshold)
                cancelled, give_up = 0.0, time.monotonic() + 30
                while cancelled < CLIENTS - 2 and time.monotonic() < give_up:
                    cancelled = cancelled_total((await client.get("/metrics")).text)
                    await asyncio.sleep(0.05)
            return waited, cancelled

        waited, cancelled = asyncio.run(scenario())
    assert waited < 1.0, f"the new request waited {waited:.2f} s behind abandoned work"
    assert cancelled >= CLIENTS - 2, cancelled  # all but those whose images were already in a forward
