"""Smoke test of the benchmark code (not a timed test): the load generator against the in-process
service with a tiny generator for about a second, the ceiling, the report tables and the MAC count."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import httpx
import pytest
import torch
from asgi_lifespan import LifespanManager

from bench import ceiling, serve, work, wrk
from bench.arith import generator_macs
from bench.common import SHIPPED_ARCH
from bench.loadgen import generate_body, percentile, run_load
from gancore.labels import FASHION_MNIST_SLUGS
from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_generator
from service.main import create_app
from service.settings import Settings

TINY = dict(latent_dim=8, num_classes=10, embed_dim=4, channels=1, image_size=28, base_width=32)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-weights")
    torch.manual_seed(0)
    save_generator(root / "tiny", ConditionalGenerator(**TINY), "dcgan", TINY, list(FASHION_MNIST_SLUGS), {})
    return root


def test_percentiles_are_nearest_rank_and_ordered() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_load_generator_against_the_service(tiny_weights: Path) -> None:
    settings = Settings(weights_dir=tiny_weights, device="cpu", max_batch=8, max_wait_ms=2, log_level="warning")

    async def drive():
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            await app.state.loading
            transport = httpx.ASGITransport(app=app)
            report = await run_load("http://bench/generate", generate_body(2), 2, concurrency=4, duration_s=1.0,
                                    warmup_s=0.2, transport=transport)
            metrics = app.state.metrics.render().decode()
        return report, metrics

    report, metrics = asyncio.run(drive())
    assert report.requests > 0 and report.errors == {}
    assert report.images == 2 * report.requests
    assert report.p50_ms <= report.p95_ms <= report.p99_ms
    assert report.requests_per_s == pytest.approx(report.requests / 1.0)
    assert "gan_batch_size_count" in metrics  # what serve.py reads for the ceiling's batch size


def test_ceiling_and_tables(tiny_weights: Path) -> None:
    model, latent_dim = work.load_model(tiny_weights / "tiny", "cpu")
    assert ceiling.requests_per_batch(37.0, 16) == 2 and ceiling.requests_per_batch(3.0, 16) == 1
    report = ceiling.run_ceiling(model, latent_dim, "cpu", n=4, r=2, duration_s=0.3, warmup_s=0.05)
    assert report.requests > 0 and report.images == 4 * report.requests
    assert report.p50_ms <= report.p95_ms <= report.p99_ms
    rows = [{"server": kind, "n": 4, "c": 8, "errors": {}, "extra": {"mean_batch": 8.0},
             **report.to_dict()} for kind in ("ours", "plain", "ceiling")]
    assert serve.table(rows).count("\n") == 4
    assert "1.00x; 1.00x" in serve.ratios(rows)


def test_shipped_architecture_arithmetic() -> None:
    # 7x7x256 -> 14x14x128 -> 28x28x64 transposed convolutions dominate: ~52M MACs per image.
    gen = ConditionalGenerator(**SHIPPED_ARCH).eval()
    assert generator_macs(gen, SHIPPED_ARCH["latent_dim"]) == 52_208_128


@pytest.mark.parametrize("template", [wrk.GENERATE_BODY, serve.TRITON_INFER["body"],
                                      '{"seed": %(seed)d, "note": "100%% %(n)d", "label": %(label)d}'])
def test_lua_body_formats_the_same_body_as_python(template: str) -> None:
    """wrk's script builds each body with Lua's string.format: the literal and arguments made for it
    must give what Python's % gives with the same values, whatever order the template uses."""
    lua_format, lua_args = wrk.lua_body(template)
    counter, n = 1234, 16
    values = {"counter % 10": counter % 10, "n": n, "counter": counter}
    args = iter(values[a.strip()] for a in lua_args.split(","))
    text = json.loads(lua_format)  # the Lua literal is a JSON string literal too
    made = re.sub(r"%%|%d", lambda m: "%" if m.group() == "%%" else str(next(args)), text)
    assert made == template % {"label": counter % 10, "n": n, "seed": counter}
    assert json.loads(made) is not None


def test_cpu_busy_fraction_is_a_share_and_a_quiet_wait_is_bounded() -> None:
    from bench.common import cpu_busy_fraction, wait_for_quiet

    busy = cpu_busy_fraction(0.2)
    assert 0.0 <= busy <= 1.0
    # busy_below above 1 is always met at once; below 0 never is, so the wait stops at max_s
    assert wait_for_quiet(busy_below=1.01, max_s=5) < 1.5
    assert 0.9 < wait_for_quiet(busy_below=-1, max_s=1) < 3.5
