"""Start-up: loading, readiness, a broken weights folder beside good ones, and settings."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError

from service.main import create_app
from service.settings import Settings
from tests.helpers import GRAY, RGB, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def mixed_weights(weights_dir: Path, tmp_path: Path) -> Path:
    """One good model, one with corrupted weights, one with a broken config, one non-model folder."""
    root = tmp_path / "weights"
    shutil.copytree(weights_dir / GRAY, root / GRAY)
    shutil.copytree(weights_dir / RGB, root / "corrupt")
    data = bytearray((root / "corrupt" / "generator.safetensors").read_bytes())
    data[-10:] = b"\x00" * 10
    (root / "corrupt" / "generator.safetensors").write_bytes(bytes(data))
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text("{not json")
    (root / "notes").mkdir()
    (root / "classifier").mkdir()  # another artefact kind: skipped, not reported as broken
    (root / "classifier" / "config.json").write_text('{"format": "cgan-service/classifier"}')
    return root


async def test_broken_folders_are_reported_while_others_serve(make_settings, mixed_weights: Path) -> None:  # noqa: ANN001
    async with serve(make_settings(weights_dir=mixed_weights)) as s:
        ready = await s.client.get("/readyz")
        assert ready.status_code == 200
        status = ready.json()["models"]
        assert status[GRAY] == "loaded"
        assert status["corrupt"].startswith("failed:") and "SHA-256" in status["corrupt"]
        assert status["bad-config"].startswith("failed:") and "JSON" in status["bad-config"]
        assert "notes" not in status and "classifier" not in status
        models = {m["name"]: m for m in (await s.client.get("/models")).json()["models"]}
        assert models["corrupt"]["loaded"] is False and "SHA-256" in models["corrupt"]["error"]
        r = await s.client.post("/generate", json={"label": 1, "model": "corrupt"})
        assert r.status_code == 503 and r.json()["error"] == "model_unavailable"
        # open to every client: the errors name files inside the weights folder, not the server's layout
        for shown in (status["corrupt"], models["corrupt"]["error"], r.json()["message"]):
            assert "corrupt/generator.safetensors" in shown and str(mixed_weights) not in shown, shown
        assert (await s.client.post("/generate", json={"label": 1})).status_code == 200
        reg = s.metrics.registry
        assert reg.get_sample_value("gan_model_loaded", {"model": "corrupt"}) == 0


async def test_not_ready_until_models_are_warm(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import service.registry

    gate = threading.Event()
    real = service.registry.load_generator

    def slow_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.registry, "load_generator", slow_load)
    app = create_app(make_settings())
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/healthz")).status_code == 200
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "loading"
            r = await client.post("/generate", json={"label": 1})
            assert r.status_code == 503 and "retry-after" in r.headers
            gate.set()
            await asyncio.wait_for(app.state.loading, 30)
            assert (await client.get("/readyz")).status_code == 200


async def test_no_models_is_not_ready(make_settings, tmp_path: Path) -> None:  # noqa: ANN001
    async with serve(make_settings(weights_dir=tmp_path / "missing")) as s:
        r = await s.client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "no models loaded"
        r = await s.client.post("/generate", json={"label": 1})
        assert r.status_code == 503
        assert (await s.client.get("/models")).json() == {"default": None, "models": []}


async def test_cors_only_when_configured(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings()) as s:
        r = await s.client.get("/healthz", headers={"Origin": "http://example.org"})
        assert "access-control-allow-origin" not in r.headers
    async with serve(make_settings(cors_origins="http://example.org, http://other.org")) as s:
        r = await s.client.get("/healthz", headers={"Origin": "http://example.org"})
        assert r.headers["access-control-allow-origin"] == "http://example.org"
        # POST /generate is answered by the front itself, outside FastAPI: CORS wraps the front,
        # so its answers, errors included, carry the header too.
        r = await s.client.post("/generate", content=b"{not json", headers={"Origin": "http://example.org"})
        assert r.status_code == 422 and r.json()["error"]
        assert r.headers["access-control-allow-origin"] == "http://example.org"
        assert r.headers["x-request-id"]


def test_settings_read_gan_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "GAN_HOST": "0.0.0.0", "GAN_PORT": "9000", "GAN_WEIGHTS_DIR": "/models", "GAN_DEVICE": "CPU",
        "GAN_DTYPE": "float32", "GAN_MAX_BATCH": "48", "GAN_MAX_WAIT_MS": "7.5", "GAN_MAX_N": "100",
        "GAN_MAX_STEPS": "16", "GAN_MAX_SCALE": "4", "GAN_QUEUE_SIZE": "512", "GAN_REQUEST_TIMEOUT_S": "3",
        "GAN_MAX_BODY_BYTES": "4096", "GAN_MAX_PIXELS": "1000000", "GAN_DEFAULT_MODEL": "mnist",
        "GAN_CORS_ORIGINS": "http://a.example", "GAN_LOG_LEVEL": "DEBUG",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.host, s.port, s.weights_dir, s.device) == ("0.0.0.0", 9000, Path("/models"), "cpu")
    assert (s.max_batch, s.max_wait_ms, s.max_n, s.max_steps, s.max_scale) == (48, 7.5, 100, 16, 4)
    assert (s.queue_size, s.request_timeout_s, s.max_body_bytes, s.max_pixels) == (512, 3, 4096, 1_000_000)
    assert (s.default_model, s.cors_origin_list, s.log_level) == ("mnist", ["http://a.example"], "debug")
    assert s.batch_sizes("cuda") == [1, 2, 4, 8, 16, 32, 48]


def test_settings_defaults_and_rejections(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.host, s.port, s.max_batch, s.max_n, s.max_steps, s.max_scale) == ("127.0.0.1", 8000, 64, 256, 32, 8)
    assert s.batch_sizes("cuda") == [1, 2, 4, 8, 16, 32, 64]
    with pytest.raises(ValidationError, match="needs a CUDA device"):
        Settings(device="cpu", dtype="float16")
    monkeypatch.setenv("GAN_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        Settings()


async def test_cuda_requested_without_gpu_stops_startup(make_settings) -> None:  # noqa: ANN001
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    app = create_app(make_settings(device="cuda"))
    with pytest.raises(Exception, match="GAN_DEVICE=cuda asked for, but PyTorch sees no CUDA GPU"):
        async with LifespanManager(app):
            pass


async def test_a_default_model_that_is_not_loaded_is_named_in_a_warning(make_settings, caplog) -> None:  # noqa: ANN001
    with caplog.at_level("WARNING", logger="service.registry"):
        async with serve(make_settings(default_model="fashion-mnist-cwgangpp")) as s:
            r = await s.client.post("/generate", json={"label": 1})
            assert r.status_code == 200 and r.headers["x-model"] == s.app.state.registry.default_name
    warning = next(rec.getMessage() for rec in caplog.records if "GAN_DEFAULT_MODEL" in rec.getMessage())
    assert "fashion-mnist-cwgangpp" in warning and f"go to {GRAY}" in warning and RGB in warning


@pytest.mark.parametrize("tf32", [False, True])
async def test_the_tf32_setting_travels_to_every_runner_and_a_cpu_leaves_torchs_flags_alone(
        make_settings, tf32: bool) -> None:  # noqa: ANN001
    # On CUDA each Runner states the policy in its own process (an engine process inherits none
    # of the worker's flags); the CUDA half is tests/service/test_cuda.py.
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    async with serve(make_settings(tf32=tf32, engine="process")) as s:
        registry = s.app.state.registry
        assert registry.options.tf32 is tf32
        engines = [e.runner for e in registry.entries.values() if e.runner is not None]
        assert engines and all(len(engine.tf32) == 2 for engine in engines)  # reported by each engine
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize(("engine", "error", "fatal"), [
    ("thread", RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    ("thread", ValueError("a bad config"), False),
    ("process", RuntimeError("CUDA error: an illegal memory access was encountered"), False),
])
async def test_a_device_error_while_loading_in_process_takes_the_process_out(
        make_settings, weights_dir: Path, engine: str, error: Exception, fatal: bool) -> None:  # noqa: ANN001
    # In-process (GAN_ENGINE=thread) a CUDA error at load or warm-up breaks this process's
    # context for every model: the process must go (on_device_error), not stay healthy with the
    # model merely "not loaded". An engine process's error ended that process alone.
    import torch

    from service.metrics import ServiceMetrics
    from service.registry import Registry

    failed: list[str] = []
    registry = Registry(make_settings(engine=engine), ServiceMetrics(), torch.device("cuda"), torch.float32,
                        on_device_error=lambda model, exc: failed.append(model))

    def broken(folder: Path) -> None:
        raise error

    registry._load_one = broken  # type: ignore[method-assign]
    entry = await registry._load_entry(weights_dir / GRAY)
    assert entry.runner is None and entry.error
    assert failed == ([GRAY] if fatal else [])


async def test_a_slow_start_is_logged_with_what_to_change(make_settings, monkeypatch, caplog) -> None:  # noqa: ANN001
    from service.registry import Registry

    monkeypatch.setattr(Registry, "SLOW_START_S", 0.0)  # every start is "slow"
    with caplog.at_level("WARNING", logger="service.registry"):
        async with serve(make_settings(max_batch=8, batch_grid="powers")):
            pass
    # said while loading (before a probe could give up on the process), and again at the end
    assert "the models are still loading after" in caplog.text and "the models took" in caplog.text
    assert caplog.text.count("4 batch sizes each (GAN_BATCH_GRID=powers, GAN_MAX_BATCH=8)") == 2
    assert "lower GAN_MAX_BATCH" in caplog.text


async def test_a_device_error_in_warm_up_takes_the_process_out_even_if_closing_fails(
        make_settings, weights_dir: Path) -> None:  # noqa: ANN001
    # The warm-up's device error breaks the context, and closing the runner then fails too
    # (torch.cuda.empty_cache raises on a broken context): the process must still be taken out.
    import torch

    from service.metrics import ServiceMetrics
    from service.registry import Registry

    failed: list[str] = []
    registry = Registry(make_settings(engine="thread"), ServiceMetrics(), torch.device("cuda"), torch.float32,
                        on_device_error=lambda model, exc: failed.append(model))

    class BrokenBatcher:
        async def start(self) -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        async def close(self) -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    registry._load_one = lambda folder: object()  # type: ignore[method-assign,assignment,return-value]
    registry._batcher = lambda runner: BrokenBatcher()  # type: ignore[method-assign,assignment,return-value]
    entry = await registry._load_entry(weights_dir / GRAY)
    assert entry.runner is None and "illegal memory access" in (entry.error or "")
    assert failed == [GRAY]
