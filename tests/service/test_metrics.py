"""/metrics is Prometheus text that prometheus-client's own parser reads."""

from __future__ import annotations

import os
import signal
from multiprocessing import forkserver, get_context

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import GRAY, RGB, Served, until

pytestmark = pytest.mark.anyio


async def test_metrics_parse_and_count(served: Served) -> None:
    await served.client.post("/generate", json={"label": 1, "n": 3})
    await served.client.post("/generate", json={"label": 1, "n": 2, "model": RGB})
    await served.client.post("/generate", json={"label": "nope"})
    await served.client.get("/interpolate", params={"label": 1, "steps": 4})
    r = await served.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(
            s.value for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert families["gan_requests"].type == "counter"
    assert value("gan_requests", "gan_requests_total", route="/generate", status="200") == 2
    assert value("gan_requests", "gan_requests_total", route="/generate", status="422") == 1
    assert value("gan_requests", "gan_requests_total", route="/interpolate", status="200") == 1
    assert value("gan_request_latency_seconds", "gan_request_latency_seconds_count",
                 route="/generate") == 3
    assert families["gan_batch_size"].type == "histogram"
    assert value("gan_batch_size", "gan_batch_size_sum", model=GRAY) == 3 + 4
    assert value("gan_images_generated", "gan_images_generated_total", model=GRAY) == 7
    assert value("gan_images_generated", "gan_images_generated_total", model=RGB) == 2
    assert value("gan_inference_seconds", "gan_inference_seconds_count", model=GRAY) == 2
    assert value("gan_queue_depth", "gan_queue_depth", model=GRAY) == 0
    assert value("gan_model_load_seconds", "gan_model_load_seconds", model=RGB) > 0
    assert value("gan_model_loaded", "gan_model_loaded", model=GRAY) == 1
    assert value("gan_device_memory_bytes", "gan_device_memory_bytes", device="cpu") > 0


async def test_each_app_has_its_own_registry(served: Served, make_settings) -> None:  # noqa: ANN001
    from tests.helpers import serve

    async with serve(make_settings()) as other:
        assert other.metrics.registry is not served.metrics.registry
        text = (await other.client.get("/metrics")).text
        assert 'route="/generate"' not in text


async def test_route_error_is_answered_and_counted(served: Served) -> None:
    """An error escaping a FastAPI route meets the app's error handler inside the service's front:
    the client gets a JSON 500 with its request id, and the metrics count it under the route."""
    served.app.state.registry = None  # GET /models now raises AttributeError inside its route
    r = await served.client.get("/models", headers={"X-Request-ID": "broken-1"})
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    assert r.headers["x-request-id"] == "broken-1"
    text = (await served.client.get("/metrics")).text
    counted = [s.value for f in text_string_to_metric_families(text) if f.name == "gan_requests" for s in f.samples
               if s.labels.get("route") == "/models" and s.labels.get("status") == "500"]
    assert counted == [1.0]


async def test_memory_counts_the_engine_processes(make_settings) -> None:  # noqa: ANN001
    """With GAN_ENGINE=process the models live in engine processes: gan_device_memory_bytes read
    only the worker's own RSS on a CPU, and 0 on a GPU (no CUDA in the worker). It now adds what
    each engine holds: its RSS here (every engine has torch and a model loaded, over 50 MB)."""
    from service.engine import EngineClient
    from service.metrics import process_rss_bytes
    from tests.helpers import serve

    async with serve(make_settings(engine="process")) as s:
        engines = [e.runner for e in s.app.state.registry.entries.values() if isinstance(e.runner, EngineClient)]
        assert len(engines) == 3 and all(engine.memory_bytes() > 50e6 for engine in engines)
        s.metrics.refresh()
        shown = s.metrics.registry.get_sample_value("gan_device_memory_bytes", {"device": "cpu"})
        assert shown >= process_rss_bytes() + 0.9 * sum(engine.memory_bytes() for engine in engines)
    assert all(engine.memory_bytes() == 0.0 for engine in engines)  # gone with the service


async def test_engines_stay_counted_when_their_fork_server_dies(make_settings) -> None:  # noqa: ANN001
    """A forked engine's exit status comes through its fork server: with the server killed,
    multiprocessing's is_alive() says the engine exited while it still serves. Its memory is read
    from /proc and stays counted; the engines serve on; the next engine gets a fresh fork server."""
    from service.engine import EngineClient
    from tests.helpers import serve

    async with serve(make_settings(engine="process")) as s:
        engines = [e.runner for e in s.app.state.registry.entries.values() if isinstance(e.runner, EngineClient)]
        forked = [e for e in engines if e.start_method == "forkserver"]
        if not forked:
            pytest.skip("this process's fork server serves another OpenMP environment")
        server_pid = forkserver._forkserver._forkserver_pid
        os.kill(server_pid, signal.SIGKILL)
        await until(lambda: not forked[0]._process.is_alive(), what="is_alive() to see the server gone")
        assert all(engine.memory_bytes() > 50e6 for engine in forked)
        assert (await s.client.post("/generate", json={"label": 1, "n": 2})).status_code == 200
    assert all(engine.memory_bytes() == 0.0 for engine in engines)
    fresh = get_context("forkserver").Process(target=os.getpid)
    fresh.start()
    fresh.join(30)
    assert fresh.exitcode == 0 and forkserver._forkserver._forkserver_pid != server_pid
