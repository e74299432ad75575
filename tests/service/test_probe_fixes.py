"""Fixes from an HTTP probe of the service: what each one promises, checked on a served app."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.helpers import GRAY, serve

pytestmark = pytest.mark.anyio


async def test_a_killed_idle_engine_fails_the_probes_without_a_request(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(engine="process")) as s:
        assert (await s.client.get("/readyz")).status_code == 200
        os.kill(s.batcher().runner._process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # the reader joins the process (at most 5 s), then tells the loop
        while (ready := await s.client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "/readyz still 200 after the engine was killed"
            await asyncio.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["models"][GRAY].startswith("failed"), ready.text
        assert "exited" in ready.json()["models"][GRAY]
        assert (await s.client.get("/healthz")).status_code == 503
        assert s.metrics.registry.get_sample_value("gan_model_loaded", {"model": GRAY}) == 0
        answer = await s.client.post("/generate", json={"label": 1, "n": 2})
        assert answer.status_code == 503 and answer.json()["error"] == "model_unavailable", answer.text


async def test_a_stopped_engine_breaks_nothing(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(engine="process")) as s:
        batcher = s.batcher()
    assert batcher.broken is None and s.app.state.unhealthy is None  # shutdown's own stop is no failure
