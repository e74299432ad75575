"""Engine processes (GAN_ENGINE=process) and device errors.

An engine serves the same pixels as the in-process runner; an engine that dies, or a forward
that fails with a CUDA error, takes the model (and the process) out of service: 503 for the
model, /readyz and /healthz 503, and the app's on_fatal hook called once, which `python -m
service` uses to shut down for a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import time
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
import torch
from asgi_lifespan import LifespanManager

from service.engine import _render_spec
from service.main import create_app
from service.rendering import RenderSpec
from tests.helpers import GRAY, RGB, ScriptedEngine, png_array, serve, until

pytestmark = pytest.mark.anyio


async def test_engine_process_gives_the_pixels_of_the_in_process_runner(make_settings) -> None:  # noqa: ANN001
    bodies = [{"label": "sneaker", "n": 5, "seed": 11}, {"label": 2, "n": 12, "seed": 12},  # 12 > max_batch
              {"model": RGB, "label": 1, "n": 3, "seed": 13}]
    walk = {"label": "bag", "label_to": "coat", "steps": 6, "seed_from": 4}
    pictures = {}
    for engine in ("thread", "process"):
        async with serve(make_settings(engine=engine)) as s:
            answers = [await s.client.post("/generate", json=b) for b in bodies]
            answers.append(await s.client.get("/interpolate", params=walk))
            assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
            pictures[engine] = [png_array(r.content).astype(int) for r in answers]
    for a, b in zip(pictures["thread"], pictures["process"], strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1  # same weights, same latents; float reordering at most


async def test_a_dead_engine_takes_the_model_out_of_service(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(engine="process")) as s:
        assert (await s.client.post("/generate", json={"label": 1, "n": 2})).status_code == 200
        engine = s.batcher().runner
        os.kill(engine._process.pid, signal.SIGKILL)
        answer = await s.client.post("/generate", json={"label": 1, "n": 2})
        assert answer.status_code == 503 and answer.json()["error"] == "model_unavailable", answer.text
        assert "exited" in answer.json()["message"]
        ready = await s.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["models"][GRAY].startswith("failed")
        assert (await s.client.get("/healthz")).status_code == 503
        # the other models' engines still serve
        assert (await s.client.post("/generate", json={"model": RGB, "label": 1, "n": 2})).status_code == 200
        assert s.metrics.registry.get_sample_value("gan_model_loaded", {"model": GRAY}) == 0


@asynccontextmanager
async def app_with_fatal_hook(settings):  # noqa: ANN001, ANN201
    calls: list[str] = []
    app = create_app(settings, on_fatal=calls.append)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        await app.state.loading
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client, calls


async def test_a_cuda_error_takes_the_process_out_of_service(make_settings) -> None:  # noqa: ANN001
    """An injected device-side assert: the batch fails 503, every later request of that model is
    503 without a forward, /readyz and /healthz go 503, and on_fatal is called exactly once."""
    async with app_with_fatal_hook(make_settings()) as (app, client, calls):
        runner = app.state.registry.entries[GRAY].batcher.runner
        forwards = {"n": 0}

        def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            forwards["n"] += 1
            raise RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA")

        runner.run = broken
        first = await client.post("/generate", json={"label": 1, "n": 2})
        assert first.status_code == 503 and first.json()["error"] == "model_unavailable", first.text
        assert "device error" in first.json()["message"]
        later = await client.post("/generate", json={"label": 1, "n": 2})
        assert later.status_code == 503 and forwards["n"] == 1  # refused before any forward
        health = await client.get("/healthz")
        assert health.status_code == 503 and "device error" in health.json()["reason"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "device error" in ready.json()["models"][GRAY]
        await until(lambda: len(calls) == 1, what="on_fatal")
        assert "device error" in calls[0]


async def test_an_ordinary_failure_does_not(make_settings) -> None:  # noqa: ANN001
    async with app_with_fatal_hook(make_settings()) as (app, client, calls):
        runner = app.state.registry.entries[GRAY].batcher.runner
        real = runner.run
        state = {"fail": True}

        def once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if state.pop("fail", False):
                raise RuntimeError("shape mismatch")
            return real(*args, **kwargs)

        runner.run = once
        assert (await client.post("/generate", json={"label": 1, "n": 2})).status_code == 500
        assert (await client.post("/generate", json={"label": 1, "n": 2})).status_code == 200
        assert (await client.get("/healthz")).status_code == 200 and calls == []


async def test_failures_that_do_not_go_away_take_the_process_out(make_settings) -> None:  # noqa: ANN001
    """An out-of-memory the CUDA context survives, batch after batch (a leak, a neighbour holding
    the GPU): each batch fails alone (500) until GAN_FAILED_BATCHES_LIMIT of them in a row; then the
    model is out of service like after a device error. A batch that runs between resets the count."""
    async with app_with_fatal_hook(make_settings(failed_batches_limit=3)) as (app, client, calls):
        runner = app.state.registry.entries[GRAY].batcher.runner
        real = runner.run
        plan = ["fail", "fail", "run", "fail", "fail"]

        def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if (plan.pop(0) if plan else "fail") == "fail":
                raise RuntimeError("CUDA error: out of memory")
            return real(*args, **kwargs)

        runner.run = flaky
        codes = [(await client.post("/generate", json={"label": 1, "n": 2})).status_code for _ in range(5)]
        assert codes == [500, 500, 200, 500, 500]  # two in a row, a success, two in a row: still serving
        assert (await client.get("/healthz")).status_code == 200 and calls == []
        third = await client.post("/generate", json={"label": 1, "n": 2})
        assert third.status_code == 503 and third.json()["error"] == "model_unavailable", third.text
        assert "3 batches in a row failed" in third.json()["message"] and "out of memory" in third.json()["message"]
        health = await client.get("/healthz")
        assert health.status_code == 503 and "3 batches in a row" in health.json()["reason"]
        await until(lambda: len(calls) == 1, what="on_fatal")


async def test_no_limit_keeps_failing_batches_alone(make_settings) -> None:  # noqa: ANN001
    async with app_with_fatal_hook(make_settings(failed_batches_limit=0)) as (app, client, calls):
        runner = app.state.registry.entries[GRAY].batcher.runner

        def out_of_memory(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("CUDA error: out of memory")

        runner.run = out_of_memory
        codes = [(await client.post("/generate", json={"label": 1, "n": 2})).status_code for _ in range(10)]
        assert codes == [500] * 10
        assert (await client.get("/healthz")).status_code == 200 and calls == []


def test_a_render_spec_crosses_to_the_engine_with_every_field() -> None:
    """The wire form is written field by field (not dataclasses.asdict, for speed): a field added to
    RenderSpec must be added there too, or the engine would render with its default."""
    spec = RenderSpec("json", nrow=3, padding=1, scale=2, meta={"model": "m", "seed": 7})
    wire = _render_spec(spec)
    assert wire is not None
    assert set(wire) == {f.name for f in dataclasses.fields(RenderSpec)}
    back = RenderSpec(**json.loads(json.dumps(wire)))
    assert back == spec and back.meta == spec.meta
    assert _render_spec(None) is None


def _environment_of(pid: int) -> dict[str, str]:
    """The environment a process started with (what its libgomp read when torch loaded it)."""
    with open(f"/proc/{pid}/environ", "rb") as fh:
        entries = fh.read().decode(errors="replace").split("\0")
    return dict(e.split("=", 1) for e in entries if "=" in e)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/<pid>/environ (Linux)")
async def test_engine_processes_get_the_wait_policy_they_can_use(make_settings, weights_dir, tmp_path,  # noqa: ANN001
                                                                 monkeypatch, caplog) -> None:  # noqa: ANN001
    # "spin" (the default) spins only engines whose guard can fall back to a shared thread count
    # (a busy board: several workers on a CPU); a test app has one worker, so its engines sleep.
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # restored (unset) after the test
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    shutil.copytree(weights_dir / GRAY, tmp_path / GRAY)  # one model: one engine to start per app
    seen = {}
    for policy in ("inherit", "passive", "spin"):
        async with serve(make_settings(engine="process", omp_wait_policy=policy, weights_dir=tmp_path)) as s:
            env = _environment_of(s.batcher().runner._process.pid)
            seen[policy] = (env.get("OMP_WAIT_POLICY"), env.get("GOMP_SPINCOUNT"))
            assert (await s.client.post("/generate", json={"label": 1, "n": 2})).status_code == 200
    assert seen == {"inherit": ("ACTIVE", None), "passive": ("PASSIVE", None), "spin": ("PASSIVE", None)}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # this process's environment is left as it was
    assert "GOMP_SPINCOUNT" not in os.environ
    assert "OMP_WAIT_POLICY=ACTIVE in the environment is replaced" in caplog.text


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/<pid>/environ (Linux)")
def test_an_engine_with_a_busy_board_spins_a_bounded_time(weights_dir, tmp_path) -> None:  # noqa: ANN001
    from service.engine import SPIN_COUNT, EngineClient
    from service.inference import RunnerOptions

    engine = EngineClient(weights_dir / GRAY, GRAY, torch.device("cpu"), RunnerOptions(), threads=1,
                          board=tmp_path / "board", threads_alone=2, omp_wait_policy="spin")
    try:
        engine.start([1, 2]).result(timeout=120)
        env = _environment_of(engine._process.pid)  # a forked engine's is its fork server's, read by the same OpenMP
        assert (env.get("OMP_WAIT_POLICY"), env.get("GOMP_SPINCOUNT")) == ("ACTIVE", str(SPIN_COUNT))
        from bench.common import process_name
        from service.engine import ENGINE_PROCESS_NAME

        assert process_name(engine._process.pid) == ENGINE_PROCESS_NAME  # what ps shows; bench.serve finds engines by it
        results, _, spread = engine.submit(torch.zeros(1, 8), torch.tensor([3]), None, None,
                                           [(1, None)]).result(timeout=60)
        assert results[0][0] and spread  # answered, as a lone batch on both threads (the board is empty)
        assert engine.lone_holds == 0  # the guard's count comes with every answer
    finally:
        engine.close()
    cuda = EngineClient(weights_dir / GRAY, GRAY, torch.device("cuda"), RunnerOptions(), threads=1,
                        board=tmp_path / "board", threads_alone=2, omp_wait_policy="spin")
    assert cuda.wait_policy() == "passive"  # nothing started: a GPU engine's forwards run no OpenMP


def _guard(best_ms: float = 2.0):  # noqa: ANN202 - LoneThreadsGuard
    from service.engine import LoneThreadsGuard

    return LoneThreadsGuard({1: best_ms / 1e3, 4: 4 * best_ms / 1e3})


def test_lone_forwards_that_keep_their_pace_keep_every_core() -> None:
    guard, now = _guard(), 100.0
    for i in range(1000):  # jitter: every third forward 10x slow, never STRIKES in a row
        guard.observe(1, 0.020 if i % 3 == 0 else 0.0015, spread=True, now=now)
        assert guard.allows(now)
    assert guard.holds == 0


def test_a_contended_team_is_held_to_the_shared_threads_and_holds_grow_while_it_lasts() -> None:
    from service.engine import LoneThreadsGuard as G

    guard, now = _guard(), 100.0
    slow = G.FACTOR * 0.002 * 1.5  # a lone forward well past FACTOR x the shared threads' best
    for _ in range(G.STRIKES - 1):
        guard.observe(1, slow, spread=True, now=now)
    assert guard.allows(now)  # not yet: STRIKES in a row
    guard.observe(1, slow, spread=True, now=now)
    assert not guard.allows(now) and not guard.allows(now + G.HOLD_S - 0.01) and guard.allows(now + G.HOLD_S)
    holds = []
    for _ in range(12):  # still contended at every probe: the hold doubles up to its ceiling
        now = guard.until
        for _ in range(G.STRIKES):
            guard.observe(1, slow, spread=True, now=now)
        holds.append(round(guard.until - now, 3))
    assert holds[:3] == [2 * G.HOLD_S, 4 * G.HOLD_S, 8 * G.HOLD_S] and holds[-1] == G.MAX_HOLD_S
    now = guard.until
    for _ in range(G.GOOD_RUN - 1):  # the contention has passed, but one run short of GOOD_RUN
        guard.observe(1, 0.0015, spread=True, now=now)
    for _ in range(G.STRIKES):
        guard.observe(1, slow, spread=True, now=now)
    assert guard.until - now == G.MAX_HOLD_S
    now = guard.until
    for _ in range(G.GOOD_RUN):
        guard.observe(1, 0.0015, spread=True, now=now)
    for _ in range(G.STRIKES):
        guard.observe(1, slow, spread=True, now=now)
    assert guard.until - now == G.HOLD_S  # a whole good run: back to the first hold
    assert guard.holds == 15


def test_the_pace_is_the_best_shared_forward_of_each_size() -> None:
    from service.engine import LoneThreadsGuard as G

    guard, now = _guard(best_ms=8.0), 100.0  # a slow warm-up (engines warming up side by side)
    guard.observe(1, 0.002, spread=False, now=now)  # a shared-thread forward sets a better pace
    assert guard.best[1] == 0.002 and guard.best[4] == 0.032
    for _ in range(G.STRIKES):  # 4x the new pace and a bit: slow against 2 ms, not against 8
        guard.observe(1, 0.0085, spread=True, now=now)
    assert not guard.allows(now)
    for _ in range(G.STRIKES):  # a size without a pace is never judged
        guard.observe(32, 10.0, spread=True, now=guard.until)
    assert guard.allows(guard.until) and guard.holds == 1


# ---------------------------------------------------------------- render threads (GAN_RENDER_THREADS)


def _engine(weights_dir, render_threads: int):  # noqa: ANN001, ANN202 - EngineClient
    from service.engine import EngineClient
    from service.inference import RunnerOptions

    engine = EngineClient(weights_dir / GRAY, GRAY, torch.device("cpu"), RunnerOptions(), threads=1,
                          render_threads=render_threads)
    engine.start([1, 2, 4, 8]).result(timeout=120)
    return engine


def test_an_engine_with_render_threads_answers_its_batches_in_order(weights_dir) -> None:  # noqa: ANN001
    """Four batches sent at once: a slow large render (8 images upscaled 8x), a forward that fails
    (a label out of range), a quick large render (one image upscaled 8x; it ends first in the
    other render thread) and a small one (rendered on the engine's main thread). Each batch gets
    its own answer, and the pixels are those of the engine that renders after each forward."""
    renders = [[(8, RenderSpec("png", nrow=8, padding=2, scale=8))], [(1, RenderSpec("png", 1, 2, 1))],
               [(1, RenderSpec("png", nrow=1, padding=2, scale=8))], [(1, RenderSpec("png", 1, 2, 1))]]
    labels = [torch.arange(8) % 10, torch.tensor([99]), torch.tensor([3]), torch.tensor([4])]
    z = torch.randn(11, 8, generator=torch.Generator().manual_seed(3))
    rows = [z[:8], z[8:9], z[9:10], z[10:]]
    shapes = [((28 + 2 + 2) * 8, ((28 + 2) * 8 + 2) * 8), None, (32 * 8, 32 * 8), (32, 32)]
    answers = {}
    for threads in (0, 2):
        engine = _engine(weights_dir, threads)
        try:
            assert engine.pipeline_depth == max(2, threads + 1)
            futures = [engine.submit(*args, None, None, r) for *args, r in zip(rows, labels, renders, strict=True)]
            with pytest.raises(RuntimeError, match="index out of range"):
                futures[1].result(timeout=60)
            results = [futures[i].result(timeout=60) for i in (0, 2, 3)]
        finally:
            engine.close()
        pngs = [answer[0][0][1] for answer in results]
        assert [answer[0][0][0] for answer in results] == [True] * 3
        assert [png_array(png).shape[:2] for png in pngs] == [shapes[0], shapes[2], shapes[3]]
        assert all(seconds >= 0 for _, seconds, _ in results) and results[0][1] > 0
        answers[threads] = [png_array(png).tolist() for png in pngs]
    assert answers[0] == answers[2]


def test_an_engine_told_to_stop_answers_every_batch_it_took_first(weights_dir) -> None:  # noqa: ANN001
    """Drain: batches still rendering when the stop arrives are answered before the process exits."""
    engine = _engine(weights_dir, 2)
    z = torch.randn(8, 8, generator=torch.Generator().manual_seed(5))
    big = [(8, RenderSpec("json", nrow=8, padding=2, scale=8))]  # eight PNGs upscaled 8x, base64 in JSON
    try:
        futures = [engine.submit(z, torch.arange(8) % 10, None, None, big) for _ in range(12)]
    finally:
        engine.close()
    answers = [f.result(timeout=5) for f in futures]
    assert all(ok for results, _, _ in answers for ok, _ in results)
    assert len({results[0][1] for results, _, _ in answers}) == 1  # the same batch each time, the same body


class _SlowPipe:
    """An engine's pipe to its worker whose every send takes a while (a parent slow to read)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_bytes(self, data: bytes) -> None:
        time.sleep(0.05)
        self.sent.append(data)


def test_closing_the_replies_waits_until_the_sender_has_sent_every_answer(weights_dir) -> None:  # noqa: ANN001
    """The engine's process ends right after `_Replies.close`, and the sender is a daemon thread:
    close must wait for it, or the answers still in its queue die with the process. Deterministic
    where the drain test above is a race: here each send is slow and the renders are quick."""
    from gancore.weights import load_generator
    from service.engine import _Replies
    from service.inference import Runner, RunnerOptions

    runner = Runner(load_generator(weights_dir / GRAY), torch.device("cpu"), RunnerOptions())
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(6))
    images = runner.forward(z, torch.tensor([1, 2]), None, None)
    large = [(2, RenderSpec("png", nrow=2, padding=2, scale=8))]  # over the render threads' threshold
    pipe = _SlowPipe()
    replies = _Replies(pipe, runner, render_threads=2)  # type: ignore[arg-type]
    for _ in range(6):
        replies.batch(images, z, large, time.perf_counter(), spread=False)
    replies.close()
    assert len(pipe.sent) == 6


async def test_a_service_with_render_threads_serves_the_same_grids(make_settings) -> None:  # noqa: ANN001
    """Many requests at once (several batches in flight, up to render threads + 1): the same
    pixels as one render after each forward, one grid per request, none mixed up."""
    bodies = [{"label": i % 10, "n": 1 + i % 5, "seed": 100 + i} for i in range(24)]
    pictures = {}
    for threads in (0, 3):
        settings = make_settings(engine="process", render_threads=threads, max_batch=4)
        async with serve(settings) as s:
            assert s.batcher().runner.pipeline_depth == max(2, threads + 1)
            answers = await asyncio.gather(*(s.client.post("/generate", json=b) for b in bodies))
            assert [r.status_code for r in answers] == [200] * len(bodies), [r.text for r in answers]
            pictures[threads] = [png_array(r.content).tolist() for r in answers]
    assert pictures[0] == pictures[3]


def test_render_threads_default_to_none_on_a_cpu_and_some_on_a_gpu(make_settings, monkeypatch) -> None:  # noqa: ANN001
    import service.settings as settings_module

    monkeypatch.setattr(settings_module, "available_cores", lambda: 16)
    assert make_settings().render_threads_for("cpu") == 0
    assert make_settings().render_threads_for("cuda") == 4  # one worker: min(4, 16 - 1)
    assert make_settings(workers=8).render_threads_for("cuda") == 1  # 16 // 8 - 1
    assert make_settings(render_threads=2).render_threads_for("cuda") == 2
    assert make_settings(render_threads=2).render_threads_for("cpu") == 2
    assert make_settings(render_threads=0).render_threads_for("cuda") == 0  # render after each forward
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    assert make_settings().render_threads_for("cuda") == 1


@pytest.mark.parametrize(("cores", "cpu", "gpu"), [(1, 1, 1), (2, 2, 2), (4, 2, 2), (6, 2, 3), (8, 2, 4), (64, 2, 4)])
def test_auto_workers_are_two_on_a_cpu_and_one_per_two_cores_up_to_four_on_a_gpu(
        cores: int, cpu: int, gpu: int, make_settings, monkeypatch) -> None:  # noqa: ANN001
    import service.settings as settings_module

    monkeypatch.setattr(settings_module, "available_cores", lambda: cores)
    assert make_settings().auto_workers("cpu") == cpu
    assert make_settings().auto_workers("cuda") == gpu


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("0", 0), ("3", 3)])
def test_render_threads_read_from_the_environment(value: str, expected: object, monkeypatch) -> None:  # noqa: ANN001
    from service.settings import Settings

    monkeypatch.setenv("GAN_RENDER_THREADS", value)
    assert Settings().render_threads == expected


@pytest.mark.parametrize("value", ["-1", "65", "many"])
def test_a_bad_render_thread_count_is_refused(value: str, monkeypatch) -> None:  # noqa: ANN001
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("GAN_RENDER_THREADS", value)
    with pytest.raises(ValidationError, match="render_threads"):
        Settings()


def test_an_engine_ignores_ctrl_c_and_stops_when_its_worker_says(weights_dir) -> None:  # noqa: ANN001
    """Ctrl-C sends SIGINT to every process of the group: the worker drains and then stops its
    engines, so an engine that died of it at once printed a KeyboardInterrupt traceback each and
    dropped the batches it held. It ignores SIGINT, keeps answering, and exits on `close`."""
    engine = _engine(weights_dir, 0)
    try:
        assert engine._process is not None and engine._process.pid is not None
        os.kill(engine._process.pid, signal.SIGINT)
        z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
        results, _, _ = engine.submit(z, torch.tensor([1, 2]), None, None, [(2, None)]).result(timeout=60)
        assert results[0][0] and results[0][1].shape == (2, 1, 28, 28)
        assert engine._process.is_alive()
    finally:
        engine.close()
    assert engine._process.exitcode == 0


class _HeldEngine(ScriptedEngine):
    """Like an engine process, reports its guard's holds so far with each answer: two batches
    with new holds, then none."""

    def on_submit(self) -> None:
        self.lone_holds += 2 if self.lone_holds < 3 else 0


async def test_an_engines_contention_holds_are_counted_in_the_metrics() -> None:
    """gan_engine_lone_holds_total: what an operator watches to learn that the cores are contended
    and GAN_OMP_WAIT_POLICY=passive would serve better; each hold counted once."""
    from service.batcher import Batcher
    from service.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    batcher = Batcher(_HeldEngine("held"), max_batch=1, max_wait_s=0.0, queue_size=100, batch_sizes=[1], observer=metrics)
    await batcher.start()
    try:
        for i in range(5):
            await batcher.submit(torch.zeros(1, 4), None, None, None, timeout_s=30, request_id=str(i))
    finally:
        await batcher.close()
    assert metrics.registry.get_sample_value("gan_engine_lone_holds_total", {"model": "held"}) == 4


def test_engines_fork_from_a_server_of_their_openmp_environment_or_are_spawned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The fork server's OpenMP read its variables once: it serves engines that would read the same.
    import service.engine as engine_module

    monkeypatch.setattr(engine_module, "_forkserver_openmp", None)  # as in a fresh worker
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert engine_module.engine_context("spin").get_start_method() == "forkserver"
    assert engine_module.engine_context("spin").get_start_method() == "forkserver"
    assert engine_module.engine_context("passive").get_start_method() == "spawn"
    assert engine_module.engine_context("inherit").get_start_method() == "spawn"  # PASSIVE, no spin count
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")  # the environment moved: "spin" overrides both, still served
    assert engine_module.engine_context("spin").get_start_method() == "forkserver"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/<pid>/environ (Linux)")
def test_a_fresh_workers_engines_are_forked_with_its_openmp_policy(weights_dir, tmp_path) -> None:  # noqa: ANN001
    # In a process of its own, as a worker is: its first engine starts the fork server, and its
    # engines are forked from it, started with the policy's OpenMP variables.
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import torch
from service.engine import SPIN_COUNT, EngineClient
from service.inference import RunnerOptions
engines = [EngineClient({str(weights_dir / GRAY)!r}, "g", torch.device("cpu"), RunnerOptions(), threads=1,
                        board={str(tmp_path / "board")!r}, threads_alone=2, omp_wait_policy="spin") for _ in range(2)]
for e in engines:
    e.start([1]).result(timeout=120)
    env = open(f"/proc/{{e._process.pid}}/environ", "rb").read().decode().split(chr(0))
    print(e.start_method, "OMP_WAIT_POLICY=ACTIVE" in env, f"GOMP_SPINCOUNT={{SPIN_COUNT}}" in env)
    e.close()
"""
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines()[:2] == ["forkserver True True"] * 2, res.stdout


def test_an_engines_exit_code_survives_two_threads_waiting_for_it(weights_dir) -> None:  # noqa: ANN001
    """The reader thread (on the pipe's end) and close() both wait for an engine's exit. A process
    forked from the fork server reports its exit status once, through a pipe: joined by two threads
    at once, the second reader found it empty and recorded 255 over the real code (a fresh-clone CI
    run: an engine that exited 0 read as 255). EngineClient lets one thread wait at a time."""
    import multiprocessing as mp
    import threading

    from service.engine import EngineClient
    from service.inference import RunnerOptions

    client = EngineClient(weights_dir / GRAY, GRAY, torch.device("cpu"), RunnerOptions(), threads=1)
    codes = []
    for _ in range(30):
        # time.sleep, not a function of this module: a child would import this test module
        # (torch, the service) for each of the 30 processes, 0.7 s each
        client._process = mp.get_context("forkserver").Process(target=time.sleep, args=(0.02,))
        client._process.start()
        waiting = [threading.Thread(target=client._join, args=(10,)) for _ in range(2)]
        for thread in waiting:
            thread.start()
        for thread in waiting:
            thread.join()
        codes.append(client._process.exitcode)
    assert codes == [0] * 30


def test_engines_are_spawned_when_the_fork_server_cannot_start(weights_dir) -> None:  # noqa: ANN001
    """The fork server's socket lives in the temporary folder: on a read-only root without a
    writable /tmp it cannot start. The engines are then spawned (with a warning) instead of the
    model failing to load."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = f"""
import logging, sys, tempfile
tempfile.tempdir = "/nonexistent/no-tmp-here"  # what gettempdir() answers: no usable folder
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
from pathlib import Path
import torch
from service.engine import EngineClient
from service.inference import RunnerOptions
engines = []
for _ in range(2):
    engine = EngineClient(Path({str(weights_dir / GRAY)!r}), "x", torch.device("cpu"), RunnerOptions(), threads=1)
    engine.start([1, 2]).result(timeout=120)
    results, _, _ = engine.submit(torch.randn(2, 8), torch.tensor([1, 2]), None, None, [(2, None)]).result(60)
    engines.append(engine)
    print("engine", engine.start_method, results[0][0], tuple(results[0][1].shape))
for engine in engines:
    engine.close()
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert [line for line in lines if line.startswith("engine")] == ["engine spawn True (2, 1, 28, 28)"] * 2
    assert sum("cannot start the engines' fork server" in line for line in lines) == 1, res.stdout  # warned once


def test_a_hung_engine_is_killed_even_with_its_fork_server_gone(weights_dir, monkeypatch) -> None:  # noqa: ANN001
    """With the fork server killed, multiprocessing reads every forked engine as exited, so close()
    would neither wait for a hung engine nor kill it. It asks /proc, waits, then kills."""
    from multiprocessing import forkserver

    from service import engine as engine_module

    engine = _engine(weights_dir, 0)
    if engine.start_method != "forkserver":
        engine.close()
        pytest.skip("this process's fork server serves another OpenMP environment")
    pid = engine._process.pid
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
    os.kill(pid, signal.SIGSTOP)  # hung: it will not read its stop message
    monkeypatch.setattr(engine_module, "STOP_TIMEOUT_S", 1.0)
    assert engine_module.engine_runs(pid)
    started = time.monotonic()
    engine.close()
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while engine_module.engine_runs(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine_module.engine_runs(pid)
