"""GAN_WORKERS: one port served by several `python -m service` worker processes (uvicorn's process
manager). /metrics adds up every worker, a killed worker is replaced while the others serve, and
SIGTERM drains every worker's queue."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from bench.common import running
from bench.overload import start_server, write_tiny_model

WORKERS = 2


def worker_pids(parent: int) -> set[int]:
    """The parent's worker processes (spawned by multiprocessing; not its resource tracker)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and "spawn_main" in cmdline:
            pids.add(int(entry.name))
    return pids


def wait_for(condition, timeout: float = 90, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def generate_count(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith('gan_requests_total{method="POST",route="/generate",status="200"}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    return folder


async def post_many(base: str, count: int, concurrency: int = 8) -> list[int]:
    """`count` requests, each on a connection of its own (so the kernel spreads them over workers)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with limit, httpx.AsyncClient(base_url=base, timeout=30) as client:
            return (await client.post("/generate", json={"label": i % 10, "n": 2, "seed": i})).status_code

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_metrics_add_up_across_workers(tmp_path: Path, multiproc_dir: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    with start_server(weights, tmp_path / "server.log", workers=WORKERS, engine="thread") as server:
        assert len(worker_pids(server.proc.pid)) == WORKERS
        statuses = asyncio.run(post_many(server.base, 40))
        assert statuses == [200] * 40
        # both workers served some of them: each writes its counters to files named by its pid
        writers = {f.stem.rsplit("_", 1)[1] for f in multiproc_dir.glob("counter_*.db")}
        assert len(writers) >= WORKERS, sorted(multiproc_dir.iterdir())
        for _ in range(6):  # whichever worker answers the scrape reports every worker's requests
            with httpx.Client(base_url=server.base, timeout=10) as client:  # a new connection each time
                assert generate_count(client.get("/metrics").text) == 40


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(tmp_path: Path, multiproc_dir: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    with start_server(weights, tmp_path / "server.log", workers=WORKERS, engine="thread") as server:
        before = worker_pids(server.proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in worker_pids(server.proc.pid), what="the killed worker to go")
        # the surviving worker answers everything while the replacement starts
        assert asyncio.run(post_many(server.base, 20)) == [200] * 20
        wait_for(lambda: len(worker_pids(server.proc.pid) - before) == 1, what="a replacement worker")
        replacement = (worker_pids(server.proc.pid) - before).pop()
        assert replacement != victim
        assert asyncio.run(post_many(server.base, 20)) == [200] * 20
        assert httpx.get(f"{server.base}/readyz", timeout=10).status_code == 200
        # the dead worker's requests stay counted; its live gauges (queue depth) are dropped
        assert generate_count(httpx.get(f"{server.base}/metrics", timeout=10).text) == 40


def test_sigterm_drains_every_worker(tmp_path: Path, multiproc_dir: Path) -> None:
    """Requests held for a batch that will not fill for 60 s; SIGTERM to the parent; every one is
    answered with its image long before that timer, and the server exits cleanly."""
    weights = write_tiny_model(tmp_path / "weights")
    hold_s = 60
    with start_server(weights, tmp_path / "server.log", workers=WORKERS, engine="thread", max_batch=64,
                      max_wait_ms=hold_s * 1000, request_timeout_s=120) as server:

        async def scenario() -> list[httpx.Response]:
            clients = [httpx.AsyncClient(base_url=server.base, timeout=120) for _ in range(6)]
            try:
                pending = [asyncio.create_task(c.post("/generate", json={"label": i, "n": 2, "seed": i}))
                           for i, c in enumerate(clients)]
                deadline = time.monotonic() + 60
                while True:  # every request queued somewhere (the gauge adds up the workers)
                    async with httpx.AsyncClient(base_url=server.base, timeout=10) as side:
                        text = (await side.get("/metrics")).text
                    depth = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                if line.startswith("gan_queue_depth{"))
                    if depth >= 12:
                        break
                    assert time.monotonic() < deadline, text
                    await asyncio.sleep(0.05)
                started = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                answers = await asyncio.gather(*pending)
                assert time.monotonic() - started < hold_s / 2, "answered by the batch timer, not the drain"
                return answers
            finally:
                for c in clients:
                    await c.aclose()

        answers = asyncio.run(scenario())
        assert [a.status_code for a in answers] == [200] * 6
        assert all(a.content[:8] == b"\x89PNG\r\n\x1a\n" for a in answers)
        assert server.proc.wait(60) == 0


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path, multiproc_dir: Path) -> None:
    """A `kill -9` of the supervisor on a bare host: its workers get SIGTERM from the kernel
    (PR_SET_PDEATHSIG), answer what they hold, and exit, instead of serving on as orphans."""
    weights = write_tiny_model(tmp_path / "weights")
    hold_s = 60
    with start_server(weights, tmp_path / "server.log", workers=WORKERS, engine="thread", max_batch=64,
                      max_wait_ms=hold_s * 1000, request_timeout_s=120) as server:
        workers = worker_pids(server.proc.pid)
        assert len(workers) == WORKERS

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
                pending = [asyncio.create_task(client.post("/generate", json={"label": i, "n": 2, "seed": i}))
                           for i in range(2)]
                deadline = time.monotonic() + 60
                while True:  # both requests queued, held by the 60 s batch timer
                    async with httpx.AsyncClient(base_url=server.base, timeout=10) as side:
                        text = (await side.get("/metrics")).text
                    if sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("gan_queue_depth{")) >= 4:
                        break
                    assert time.monotonic() < deadline, text
                    await asyncio.sleep(0.05)
                started = time.monotonic()
                server.proc.kill()
                answers = await asyncio.gather(*pending)
                assert time.monotonic() - started < hold_s / 2, "answered by the batch timer, not a drain"
                return answers

        answers = asyncio.run(scenario())
        assert [a.status_code for a in answers] == [200, 200]
        assert all(a.content[:8] == b"\x89PNG\r\n\x1a\n" for a in answers)
        wait_for(lambda: not any(running(pid) for pid in workers), timeout=60,
                 what="the orphaned workers to exit")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.base}/healthz", timeout=5)
