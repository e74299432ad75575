"""Faults: broken weights files, a failing batch among good ones, and SIGTERM on a real server.

tests/service covers one corrupt file beside good ones, a single failing batch (500 with the
request id) and draining the batchers in-process; this adds the other ways a weights file goes
bad, a failing batch while other batches are in flight, and the whole shutdown path of a real
uvicorn process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.overload import queue_depth, start_server, write_tiny_model
from tests.helpers import GRAY, RGB, serve

WEIGHTS = "generator.safetensors"


def _truncate(folder: Path, _other: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


def _flip_middle(folder: Path, _other: Path) -> None:
    data = bytearray((folder / WEIGHTS).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    (folder / WEIGHTS).write_bytes(bytes(data))


def _replace_with_other_model(folder: Path, other: Path) -> None:
    """A valid safetensors file, but not the one config.json recorded."""
    shutil.copy(other / WEIGHTS, folder / WEIGHTS)


def _truncate_unrecorded(folder: Path, other: Path) -> None:
    """No SHA-256 recorded: the safetensors parser itself must refuse the truncated file."""
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    _truncate(folder, other)


FAULTS: list[tuple[str, Callable[[Path, Path], None], str]] = [
    ("truncated", _truncate, "SHA-256"),
    ("corrupt-bytes", _flip_middle, "SHA-256"),
    ("sha-mismatch", _replace_with_other_model, "SHA-256"),
    ("truncated-no-sha", _truncate_unrecorded, "cannot load"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "damage", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_bad_weights_refused_with_a_log_line_while_others_serve(
    make_settings, weights_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: ANN001
    fault: str, damage: Callable[[Path, Path], None], reason: str,
) -> None:
    root = tmp_path / "weights"
    shutil.copytree(weights_dir / GRAY, root / GRAY)
    shutil.copytree(weights_dir / GRAY, root / "broken")
    damage(root / "broken", weights_dir / RGB)
    with caplog.at_level(logging.ERROR, logger="service"):
        async with serve(make_settings(weights_dir=root)) as s:
            lines = [r.getMessage() for r in caplog.records if r.name == "service.registry"]
            assert any("NOT loaded" in m and str(root / "broken") in m and reason in m for m in lines), lines
            ready = await s.client.get("/readyz")
            assert ready.status_code == 200  # another model serves
            assert ready.json()["models"] == {GRAY: "loaded", "broken": ready.json()["models"]["broken"]}
            assert ready.json()["models"]["broken"].startswith("failed:") and reason in ready.json()["models"]["broken"]
            models = {m["name"]: m for m in (await s.client.get("/models")).json()["models"]}
            assert models["broken"]["loaded"] is False and reason in models["broken"]["error"]
            r = await s.client.post("/generate", json={"label": 1, "model": "broken"})
            assert r.status_code == 503 and r.json()["error"] == "model_unavailable"
            assert (await s.client.post("/generate", json={"label": 1, "model": GRAY})).status_code == 200


@pytest.mark.anyio
async def test_failing_batch_spares_the_other_batches(make_settings, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    """Three requests of two images with max_batch 2: three forwards; only the second raises."""
    async with serve(make_settings(max_batch=2, max_wait_ms=200)) as s:
        runner = s.batcher().runner
        real_run = runner.run
        calls = {"n": 0}

        def second_fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated device fault")
            return real_run(*args, **kwargs)

        runner.run = second_fails
        with caplog.at_level(logging.ERROR, logger="service"):
            responses = await asyncio.gather(*(
                s.client.post("/generate", json={"label": i, "n": 2, "seed": i}, headers={"X-Request-ID": f"r-{i}"})
                for i in range(3)
            ))
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [200, 200, 500], statuses
        failed = responses[statuses.index(500)].json()
        assert failed["error"] == "internal_error"
        failed_id = failed["request_id"]
        batch_logs = [r.getMessage() for r in caplog.records if "batch of" in r.getMessage()]
        assert len(batch_logs) == 1 and failed_id in batch_logs[0] and "simulated device fault" in caplog.text
        assert all(f"r-{i}" not in batch_logs[0] for i in range(3) if f"r-{i}" != failed_id)
        assert (await s.client.post("/generate", json={"label": 1, "n": 2})).status_code == 200  # still running
        assert s.batcher()._task is not None and not s.batcher()._task.done()


MAX_WAIT_S = 10.0  # the largest GAN_MAX_WAIT_MS: the batch timer these requests would sit out


def test_sigterm_finishes_queued_requests_then_exits(tmp_path: Path) -> None:
    """Requests wait in the queue for a batch that will not fill for MAX_WAIT_S; SIGTERM arrives;
    every one of them gets its image before that timer could have fired (so the drain answered
    them, not the timer), new connections are refused, and the process exits cleanly."""
    weights = write_tiny_model(tmp_path / "weights")
    log = tmp_path / "server.log"
    clients, n = 4, 2

    async def scenario(base: str, proc) -> tuple[list[int], float, str]:  # noqa: ANN001
        async with httpx.AsyncClient(base_url=base, timeout=60) as client, \
                httpx.AsyncClient(base_url=base, timeout=5) as side:
            pending = [asyncio.create_task(client.post("/generate", json={"label": i, "n": n, "seed": i}))
                       for i in range(clients)]
            first_queued = time.monotonic()  # no earlier than the first request entered the queue
            deadline = time.monotonic() + 30
            while queue_depth((await side.get("/metrics")).text) < clients * n:
                assert time.monotonic() < deadline, "requests never queued"
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*pending)
            answered_after = time.monotonic() - first_queued
            assert all(r.content[:8] == b"\x89PNG\r\n\x1a\n" for r in responses if r.status_code == 200)
            # uvicorn notices the signal on its next tick (0.1 s) and then stops listening; the
            # drain can answer the queued requests before that, so new connections are refused
            # soon after, not necessarily at once.
            after, give_up = "never tried", time.monotonic() + 10
            while time.monotonic() < give_up:
                async with httpx.AsyncClient(base_url=base, timeout=2) as fresh:
                    try:
                        after = f"answered {(await fresh.get('/healthz')).status_code}"
                    except httpx.TransportError as exc:
                        after = f"refused ({type(exc).__name__})"
                        break
                await asyncio.sleep(0.05)
            return [r.status_code for r in responses], answered_after, after

    with start_server(weights, log, max_batch=64, max_wait_ms=int(MAX_WAIT_S * 1000), request_timeout_s=60,
                      log_level="info") as server:
        statuses, answered_after, after = asyncio.run(scenario(server.base, server.proc))
        code = server.proc.wait(60)
    text = log.read_text()
    assert statuses == [200] * clients, text
    assert answered_after < MAX_WAIT_S, (
        f"queued requests were answered {answered_after:.1f} s after queueing, when the batch timer "
        f"fired ({MAX_WAIT_S} s), not by the drain on SIGTERM\n{text[-3000:]}")
    assert after.startswith("refused"), after
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in text, (code, text)
