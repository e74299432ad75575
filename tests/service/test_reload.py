"""POST /admin/reload (GAN_ADMIN_TOKEN): new, changed, broken and removed model folders while the
service runs; requests in flight finish on the old weights; every worker of a real server reloads."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.overload import MODEL, start_server, write_tiny_model
from gancore.labels import FASHION_MNIST_SLUGS
from gancore.weights import sha256_file
from tests.helpers import GRAY, RGB, RGB_LABELS, HeldForward, png_array, serve, until, write_model
from tests.service.test_rate_limit import _client_per_worker

ADMIN = "admin-token-7"
NEW = "tiny-new"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def write_gray(folder: Path, seed: int) -> None:
    write_model(folder, seed, 1, 28, list(FASHION_MNIST_SLUGS))


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    root = tmp_path / "weights"
    write_gray(root / GRAY, 1)
    write_model(root / RGB, 2, 3, 32, RGB_LABELS)
    return root


def reloads(text: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "gan_model_reloads"
               for s in f.samples if s.name == "gan_model_reloads_total"
               and all(s.labels.get(k) == v for k, v in labels.items()))


async def image(client: httpx.AsyncClient, **body: object) -> np.ndarray:
    r = await client.post("/generate", json={"n": 2, "seed": 7, "label": 1, **body})
    assert r.status_code == 200, r.text
    return png_array(r.content)


@pytest.mark.anyio
async def test_route_absent_without_token_and_401_with_a_wrong_one(make_settings, weights: Path) -> None:  # noqa: ANN001
    async with serve(make_settings(weights_dir=weights)) as s:
        r = await s.client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert "/admin/reload" not in (await s.client.get("/openapi.json")).json()["paths"]
    async with serve(make_settings(weights_dir=weights, admin_token=ADMIN, api_keys="an-api-key")) as s:
        for headers in ({}, {"Authorization": "Bearer admin-token-8"}, {"Authorization": "Bearer an-api-key"},
                        {"Authorization": f"Basic {ADMIN}"}):
            r = await s.client.post("/admin/reload", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"] == "unauthorized" and r.json()["field"] == "authorization"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await s.client.post("/admin/reload", headers=AUTH)  # the admin token alone, no API key needed
        assert r.status_code == 200 and r.json()["unchanged"] == [GRAY, RGB]
        assert "/admin/reload" in (await s.client.get("/openapi.json")).json()["paths"]


@pytest.mark.anyio
async def test_add_replace_break_and_remove(make_settings, weights: Path) -> None:  # noqa: ANN001
    async with serve(make_settings(weights_dir=weights, admin_token=ADMIN)) as s:
        c = s.client
        before = {m["name"]: m for m in (await c.get("/models")).json()["models"]}
        assert before[GRAY]["weights_sha256"] == sha256_file(weights / GRAY / "generator.safetensors")
        assert before[GRAY]["load_seconds"] > 0
        started_at = dt.datetime.fromisoformat(before[GRAY]["loaded_at"])
        assert started_at.tzinfo is not None and started_at <= dt.datetime.now(dt.timezone.utc)
        gray_old, rgb_old = await image(c), await image(c, model=RGB)

        r = await c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200
        body = r.json()
        assert (body["added"], body["replaced"], body["removed"], body["failed"]) == ([], [], [], [])
        assert body["unchanged"] == [GRAY, RGB] and body["pending"] == [] and body["generation"] == 1
        assert list(body["workers"]) == [str(body["worker"])]

        write_gray(weights / NEW, 4)  # a new folder
        write_gray(weights / GRAY, 11)  # new weights for a served model
        rgb_weights = (weights / RGB / "generator.safetensors").read_bytes()
        (weights / RGB / "generator.safetensors").write_bytes(b"not a safetensors file")  # broken
        body = (await c.post("/admin/reload", headers=AUTH)).json()
        assert body["added"] == [NEW] and body["replaced"] == [GRAY] and body["unchanged"] == []
        (failed,) = body["failed"]
        assert failed["model"] == RGB and failed["folder"] == RGB and "does not match config.json" in failed["error"]
        assert body["generation"] == 2

        gray_new = await image(c)
        assert gray_new.shape == gray_old.shape and not np.array_equal(gray_new, gray_old)
        assert np.array_equal(await image(c, model=RGB), rgb_old)  # the broken folder's old model serves on
        assert (await image(c, model=NEW)).shape == gray_old.shape
        models = {m["name"]: m for m in (await c.get("/models")).json()["models"]}
        assert models[GRAY]["weights_sha256"] == sha256_file(weights / GRAY / "generator.safetensors")
        assert models[GRAY]["weights_sha256"] != before[GRAY]["weights_sha256"]
        assert dt.datetime.fromisoformat(models[GRAY]["loaded_at"]) > started_at
        assert models[RGB] == before[RGB]  # untouched: same weights, same load time
        assert models[NEW]["loaded"] and models[NEW]["weights_sha256"]

        shutil.rmtree(weights / NEW)
        (weights / RGB / "generator.safetensors").write_bytes(rgb_weights)  # repaired: the files that serve
        body = (await c.post("/admin/reload", headers=AUTH)).json()
        assert body["removed"] == [NEW] and body["unchanged"] == [GRAY, RGB] and body["failed"] == []
        r = await c.post("/generate", json={"n": 1, "label": 1, "model": NEW})
        assert r.status_code == 404 and r.json()["error"] == "unknown_model"
        assert NEW not in {m["name"] for m in (await c.get("/models")).json()["models"]}
        assert np.array_equal(await image(c), gray_new)
        # the whole weights folder gone (a volume not mounted): nothing is removed
        weights.rename(weights.with_name("elsewhere"))
        body = (await c.post("/admin/reload", headers=AUTH)).json()
        assert body["removed"] == [] and "does not exist; nothing was changed" in body["failed"][0]["error"]
        assert np.array_equal(await image(c), gray_new)
        text = (await c.get("/metrics")).text
    assert reloads(text, model=NEW, result="added") == 1
    assert reloads(text, model=GRAY, result="replaced") == 1
    assert reloads(text, model=RGB, result="failed") == 1
    assert reloads(text, model=NEW, result="removed") == 1
    assert 'gan_model_loaded{model="tiny-new"}' not in text  # a removed model's gauges go


@pytest.mark.anyio
async def test_requests_in_flight_finish_on_the_old_weights(make_settings, weights: Path) -> None:  # noqa: ANN001
    async with serve(make_settings(weights_dir=weights, admin_token=ADMIN, max_batch=2)) as s:
        c = s.client
        old_image = await image(c)
        old = s.app.state.registry.entries[GRAY]
        with HeldForward(old.runner) as held:
            running = asyncio.create_task(c.post("/generate", json={"n": 2, "seed": 7, "label": 1}))
            await held.wait_started()
            queued = asyncio.create_task(c.post("/generate", json={"n": 2, "seed": 7, "label": 1}))
            await until(lambda: old.batcher.queued_images + old.batcher.in_flight * 2 >= 4, what="queued")
            write_gray(weights / GRAY, 11)
            reload = asyncio.create_task(c.post("/admin/reload", headers=AUTH))
            # the new version serves while the old one still holds its forward
            await until(lambda: s.app.state.registry.entries[GRAY] is not old, what="the swap")
            new_image = await image(c)
            assert not np.array_equal(new_image, old_image)
            assert not reload.done() and not running.done() and not queued.done()  # the old one drains
            held.release.set()
            answers = await asyncio.gather(running, queued)
        for r in answers:
            assert r.status_code == 200 and np.array_equal(png_array(r.content), old_image)
        r = await reload
        assert r.status_code == 200 and r.json()["replaced"] == [GRAY]
        assert old.batcher._task is not None and old.batcher._task.done()  # drained and stopped
        assert np.array_equal(await image(c), new_image)


@pytest.mark.anyio
async def test_reload_with_engine_processes(make_settings, tmp_path: Path) -> None:  # noqa: ANN001
    """The default engine: the new version's process is started and warmed beside the old one,
    which exits once drained."""
    root = tmp_path / "one-model"
    write_gray(root / GRAY, 1)
    async with serve(make_settings(weights_dir=root, admin_token=ADMIN, engine="process")) as s:
        old = s.app.state.registry.entries[GRAY]
        before = await image(s.client)
        write_gray(root / GRAY, 11)
        r = await s.client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["replaced"] == [GRAY]
        new = s.app.state.registry.entries[GRAY]
        assert old.runner._process is not None and new.runner._process is not None
        assert not old.runner._process.is_alive() and new.runner._process.is_alive()
        assert not np.array_equal(await image(s.client), before)


def test_reload_reaches_both_workers_of_a_real_server(tmp_path: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    with start_server(weights, tmp_path / "server.log", workers=2, engine="thread", admin_token=ADMIN,
                      max_batch=4) as server:

        async def both_serving() -> None:
            for client in await _client_per_worker(server.base, 2):
                await client.aclose()

        # /readyz answered from one worker; the other may still be starting, and a worker whose
        # start-up scan comes after the new folder counts that load as the reload (no "added").
        asyncio.run(both_serving())
        write_gray(weights / NEW, 4)
        r = httpx.post(f"{server.base}/admin/reload", headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["added"] == [NEW] and body["unchanged"] == [MODEL] and body["pending"] == []
        assert len(body["workers"]) == body["workers_expected"] == 2
        for worker in body["workers"].values():
            assert worker["generation"] == body["generation"] == 1 and worker["added"] == [NEW]

        async def on_each_worker() -> list[tuple[int, set[str]]]:
            clients = await _client_per_worker(server.base, 2)
            try:
                seen = []
                for client in clients:
                    generated = await client.post("/generate", json={"model": NEW, "label": 1, "n": 2})
                    names = {m["name"] for m in (await client.get("/models")).json()["models"]}
                    seen.append((generated.status_code, names))
                return seen
            finally:
                for client in clients:
                    await client.aclose()

        assert asyncio.run(on_each_worker()) == [(200, {MODEL, NEW})] * 2
        shutil.rmtree(weights / NEW)
        body = httpx.post(f"{server.base}/admin/reload", headers=AUTH, timeout=60).json()
        assert [w["removed"] for w in body["workers"].values()] == [[NEW], [NEW]]
        assert [status for status, _ in asyncio.run(on_each_worker())] == [404, 404]
        log = server.log_text()
    assert ADMIN not in log
