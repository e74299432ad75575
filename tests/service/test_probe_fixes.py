"""Fixes from an HTTP probe of the service: what each one promises, checked on a served app."""

from __future__ import annotations

import asyncio
import gzip
import json
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


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
            "headers": headers or [], "client": ("127.0.0.1", 5000), "server": ("test", 80)}


async def _call(app, scope: dict, messages: list[dict], then_wait: bool = True) -> list[dict]:  # noqa: ANN001
    """Run one request on the ASGI app: `messages` from the client, then (then_wait) silence,
    as from a client that stopped sending; what the app sent."""
    incoming = list(messages)
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        if then_wait:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def _requests(s, route: str, method: str, status: int) -> float:  # noqa: ANN001
    labels = {"route": route, "method": method, "status": str(status)}
    return s.metrics.registry.get_sample_value("gan_requests_total", labels) or 0.0


@pytest.mark.parametrize("path", ["/generate", "/interpolate"])
async def test_a_body_that_does_not_arrive_in_time_gets_408(make_settings, path: str) -> None:  # noqa: ANN001
    async with serve(make_settings(body_timeout_s=0.3)) as s:
        head = [(b"content-type", b"application/json"), (b"content-length", b"40")]
        began = time.monotonic()
        sent = await _call(s.app, _scope("POST", path, head), [{"type": "http.request", "body": b'{"n"',
                                                                 "more_body": True}])
        assert 0.3 <= time.monotonic() - began < 3
        start, body = sent[0], json.loads(sent[1]["body"])
        assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
        assert body["error"] == "body_timeout" and "GAN_BODY_TIMEOUT_S" in body["message"], body
        assert _requests(s, path, "POST", 408) == 1
        # a body that comes at once is unaffected, and so is the next request
        answer = await s.client.post("/generate", json={"label": 1, "n": 1})
        assert answer.status_code == 200
        assert not s.app.state.body_deadline.reading and not s.app.state.body_deadline.expired


@pytest.mark.parametrize("path", ["/generate", "/interpolate"])
async def test_a_client_gone_mid_body_counts_499_under_its_route(make_settings, path: str) -> None:  # noqa: ANN001
    async with serve(make_settings()) as s:
        head = [(b"content-type", b"application/json"), (b"content-length", b"40")]
        sent = await _call(s.app, _scope("POST", path, head),
                           [{"type": "http.request", "body": b'{"n"', "more_body": True}], then_wait=False)
        assert sent == []  # nobody to answer
        assert _requests(s, path, "POST", 499) == 1 and _requests(s, path, "POST", 500) == 0


@pytest.mark.parametrize("path", ["/generate", "/interpolate"])
async def test_a_body_too_large_counts_under_its_route(make_settings, path: str) -> None:  # noqa: ANN001
    async with serve(make_settings(max_body_bytes=64)) as s:
        answer = await s.client.post(path, content=b"x" * 65, headers={"content-type": "application/json"})
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"
        assert _requests(s, path, "POST", 413) == 1 and _requests(s, "unmatched", "POST", 413) == 0
        assert (await s.client.post("/nowhere", content=b"x" * 65)).status_code == 413
        assert _requests(s, "unmatched", "POST", 413) == 1  # an unknown path is no route of ours


ALLOWED = {"/generate": "GET, HEAD, POST", "/interpolate": "GET, HEAD, POST", "/models": "GET, HEAD",
           "/healthz": "GET, HEAD", "/readyz": "GET, HEAD", "/metrics": "GET, HEAD", "/": "GET, HEAD",
           "/openapi.json": "GET, HEAD", "/docs": "GET, HEAD", "/docs/assets/swagger-ui-bundle.js": "GET, HEAD",
           "/docs/oauth2-redirect": "GET, HEAD", "/redoc": "GET, HEAD", "/admin/reload": "POST"}


async def test_a_405_allows_every_method_its_path_serves(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(admin_token="t0ken")) as s:
        for path, allowed in ALLOWED.items():
            for method in ("PUT", "DELETE", "PATCH") + (() if "POST" in allowed else ("POST",)):
                answer = await s.client.request(method, path)
                assert answer.status_code == 405, (method, path, answer.text)
                assert answer.headers["allow"] == allowed, (method, path)
                assert answer.json()["error"] == "method_not_allowed"
            for method in allowed.split(", "):  # and each method it names is served
                answer = await s.client.request(method, path, json={} if method == "POST" else None,
                                                headers={"authorization": "Bearer t0ken"})
                assert answer.status_code != 405, (method, path)


async def test_more_images_than_the_queue_holds_get_422_not_a_503_forever(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(queue_size=10, max_batch=8)) as s:  # max_n 64, max_steps 12
        for body in ({"label": 1, "n": 11, "seed": 1}, {"label": 1, "n": 9, "seed": 1}):  # large, and over a batch
            answer = await s.client.post("/generate", json=body)
            if body["n"] > 10:
                assert answer.status_code == 422 and answer.json()["field"] == "n", answer.text
                assert "GAN_QUEUE_SIZE" in answer.json()["message"] and "retry-after" not in answer.headers
            else:
                assert answer.status_code == 200, answer.text
        answer = await s.client.get("/generate", params={"label": 1, "n": 11})
        assert answer.status_code == 422 and answer.json()["field"] == "n"
        answer = await s.client.get("/interpolate", params={"label": 1, "label_to": 2, "steps": 11})
        assert answer.status_code == 422 and answer.json()["field"] == "steps", answer.text
        assert "GAN_QUEUE_SIZE" in answer.json()["message"]
        assert (await s.client.get("/interpolate", params={"label": 1, "label_to": 2, "steps": 10})).status_code == 200
        assert not s.metrics.registry.get_sample_value("gan_rejected_requests_total",
                                                        {"model": GRAY, "reason": "queue_full"})


async def test_list_headers_split_over_lines_count_whole(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings()) as s:
        for path, params in (("/generate", {"label": 1, "n": 2, "seed": 42}),
                             ("/interpolate", {"label": 1, "label_to": 2, "steps": 3, "seed_from": 4})):
            first = await s.client.get(path, params=params)
            etag = first.headers["etag"]
            split = [("if-none-match", '"other"'), ("if-none-match", etag)]
            assert (await s.client.get(path, params=params, headers=split)).status_code == 304, path
            split = [("accept", "application/x-nothing"), ("accept", "application/json")]
            answer = await s.client.get(path, params=params, headers=split)
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", path
        body = {"label": 1, "n": 2, "seed": 42}  # the fast POST path reads them the same way
        etag = (await s.client.post("/generate", json=body)).headers["etag"]
        split = [("if-none-match", '"other"'), ("if-none-match", etag)]
        assert (await s.client.post("/generate", json=body, headers=split)).status_code == 304


async def test_a_compressed_body_gets_415_naming_its_encoding(make_settings) -> None:  # noqa: ANN001
    bodies = {"/generate": {"label": 1, "n": 2, "seed": 1}, "/interpolate": {"label": 1, "label_to": 2, "steps": 3}}
    async with serve(make_settings()) as s:
        for path, body in bodies.items():
            plain = json.dumps(body).encode()
            for encoding, content in (("gzip", gzip.compress(plain)), ("br", b"\x8b\x02\x80" + plain[:4]),
                                      ("identity, gzip", gzip.compress(plain))):
                answer = await s.client.post(path, content=content, headers={
                    "content-type": "application/json", "content-encoding": encoding})
                assert answer.status_code == 415, (path, encoding, answer.text)
                error = answer.json()
                assert error["error"] == "unsupported_media_type" and error["field"] == "content-encoding"
                assert encoding.split(", ")[-1] in error["message"]
            answer = await s.client.post(path, content=plain, headers={
                "content-type": "application/json", "content-encoding": "identity"})
            assert answer.status_code == 200, (path, answer.text)
