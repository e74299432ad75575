"""API keys (GAN_API_KEYS) and the metrics token (GAN_METRICS_TOKEN): 401 or 200 per route, open
routes stay open, constant-time comparison, keys never in logs or metrics."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

import service.auth
from service.middleware import ServiceFront
from service.settings import Settings, parse_api_keys
from tests.helpers import GRAY, serve

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["key-alpha-0123456789", "key-beta-9876543210"]
METRICS_TOKEN = "scrape-token-42"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


# Every route that needs a key, as (method, path, keyword arguments of the client call).
KEYED = [
    ("POST", "/generate", {"json": {"label": "sneaker", "n": 2, "seed": 1}}),
    ("GET", "/generate", {"params": {"label": "sneaker", "n": 2, "seed": 1}}),
    ("GET", "/interpolate", {"params": {"label": "sneaker", "steps": 3, "seed_from": 1}}),
    ("GET", "/models", {}),
]
OPEN = ["/healthz", "/readyz", "/", "/docs", "/openapi.json", "/docs/assets/swagger-ui.css"]


def front(app) -> ServiceFront:  # noqa: ANN001
    """The service's front inside the app's middleware stack (built at the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, ServiceFront):
        layer = layer.app
    return layer


def metric(text: str, family: str, sample: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == family for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_keyed_routes_need_a_key(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(api_keys=",".join(KEYS))) as s:
        for method, path, kwargs in KEYED:
            r = await s.client.request(method, path, **kwargs)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            body = r.json()
            assert body["error"] == "unauthorized" and body["field"] == "authorization"
            assert "Authorization: Bearer <key>" in body["message"]
            assert r.headers["x-request-id"]

            wrong = await s.client.request(method, path, headers=bearer("key-gamma"), **kwargs)
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert "not valid" in wrong.json()["message"]
            basic = await s.client.request(method, path, headers={"Authorization": f"Basic {KEYS[0]}"}, **kwargs)
            assert basic.status_code == 401 and "Bearer scheme" in basic.json()["message"]

            for key in KEYS:  # every key opens every keyed route; the scheme is case-insensitive
                ok = await s.client.request(method, path, headers={"Authorization": f"bearer  {key} "}, **kwargs)
                assert ok.status_code == 200, (path, ok.text)
        # POST /interpolate is guarded by path, whatever the route's methods are
        r = await s.client.post("/interpolate", json={"label": "sneaker", "steps": 3})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_open_routes_stay_open_with_keys(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(api_keys=KEYS[0])) as s:
        for path in OPEN:
            r = await s.client.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert (await s.client.get("/metrics")).status_code == 200  # no metrics token: open
        assert (await s.client.get("/nowhere")).status_code == 404  # unguarded paths keep their answers
        # the OpenAPI schema tells /docs and clients which routes need the key
        schema = (await s.client.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "description": "An API key (GAN_API_KEYS) or the metrics token"}
        assert schema["paths"]["/generate"]["post"]["security"] == [{"bearer": []}]
        assert schema["paths"]["/generate"]["get"]["security"] == [{"bearer": []}]
        assert {"401", "429"} <= set(schema["paths"]["/interpolate"]["get"]["responses"])
        assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_without_keys_nothing_is_checked(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings()) as s:
        r = await s.client.post("/generate", json={"label": 1, "n": 2}, headers=bearer("anything"))
        assert r.status_code == 200
        assert front(s.app).guard is None and s.app.state.limiter is None
        text = (await s.client.get("/metrics")).text
        assert "gan_key_images_total{" not in text and "gan_key_refused_total{" not in text


async def test_metrics_token(make_settings) -> None:  # noqa: ANN001
    async with serve(make_settings(metrics_token=METRICS_TOKEN)) as s:
        r = await s.client.get("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "GAN_METRICS_TOKEN" in r.json()["message"]
        wrong = await s.client.get("/metrics", headers=bearer("scrape-token-43"))
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        ok = await s.client.get("/metrics", headers=bearer(METRICS_TOKEN))
        assert ok.status_code == 200 and "gan_requests_total" in ok.text
        assert metric(ok.text, "gan_key_refused", "gan_key_refused_total", key_id="none", status="401") == 1
        assert metric(ok.text, "gan_key_refused", "gan_key_refused_total", key_id="invalid", status="401") == 1
        # without GAN_API_KEYS the image routes stay open
        assert (await s.client.post("/generate", json={"label": 1, "n": 1})).status_code == 200
        assert (await s.client.get("/models")).status_code == 200


async def test_tokens_are_compared_in_constant_time(make_settings, monkeypatch) -> None:  # noqa: ANN001
    calls: list[tuple[bytes, bytes]] = []
    real = service.auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(service.auth.hmac, "compare_digest", spy)
    async with serve(make_settings(metrics_token=METRICS_TOKEN, api_keys=KEYS[0])) as s:
        assert (await s.client.get("/metrics", headers=bearer("x"))).status_code == 401
        assert (await s.client.get("/metrics", headers=bearer(METRICS_TOKEN))).status_code == 200
        # digest against digest: equal lengths whatever was sent, so the time says nothing of the token
        assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)
        assert calls[1] == (hashlib.sha256(METRICS_TOKEN.encode()).digest(),) * 2
        # keys are looked up by digest: the guard keeps no key, only digests
        guard = front(s.app).guard
        kept = repr(vars(guard))
        assert KEYS[0] not in kept and hashlib.sha256(KEYS[0].encode()).digest() in guard._keys


async def test_keys_never_reach_logs_or_metrics(make_settings, caplog) -> None:  # noqa: ANN001
    with caplog.at_level(logging.DEBUG):
        async with serve(make_settings(api_keys=",".join(KEYS), log_level="debug")) as s:
            for key in (*KEYS, "not-a-key-at-all", KEYS[0]):
                await s.client.post("/generate", json={"label": 1, "n": 3}, headers=bearer(key))
                await s.client.get("/interpolate", params={"label": 1, "steps": 4}, headers=bearer(key))
            await s.client.post("/generate", json={"label": "nope"}, headers=bearer(KEYS[1]))  # 422: not served
            await s.client.get("/models")
            text = (await s.client.get("/metrics")).text
            settings_repr = repr(s.app.state.settings)
    for secret in (*KEYS, "not-a-key-at-all"):
        assert secret not in caplog.text and secret not in text and secret not in settings_repr
    # images served per key id: key alpha twice (3 + 4 each time), beta once
    assert metric(text, "gan_key_images", "gan_key_images_total", key_id=key_id(KEYS[0])) == 14
    assert metric(text, "gan_key_images", "gan_key_images_total", key_id=key_id(KEYS[1])) == 7
    assert metric(text, "gan_key_refused", "gan_key_refused_total", key_id="invalid", status="401") == 2
    assert metric(text, "gan_key_refused", "gan_key_refused_total", key_id="none", status="401") == 1
    assert caplog.records, "nothing was logged: the check above proves nothing"


async def test_keys_from_a_file(make_settings, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "api-keys"
    path.write_text(f"# the service's keys\n\n  {KEYS[0]}  \n# {KEYS[1]} is retired\n")
    async with serve(make_settings(api_keys=f"@{path}")) as s:
        ok = await s.client.get("/models", headers=bearer(KEYS[0]))
        assert ok.status_code == 200 and ok.json()["default"] == GRAY
        assert (await s.client.get("/models", headers=bearer(KEYS[1]))).status_code == 401
        assert (await s.client.get("/models", headers=bearer(f"# {KEYS[1]} is retired"))).status_code == 401


def test_key_list_parsing(tmp_path: Path) -> None:
    assert parse_api_keys(" a , b,,a ") == ["a", "b"]
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n\n")
    with pytest.raises(ValueError, match="no key in the key file"):
        parse_api_keys(f"@{empty}")
    with pytest.raises(ValueError, match="cannot read the key file"):
        parse_api_keys(f"@{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="no key in the list"):
        parse_api_keys(" , ")
    spaced = tmp_path / "spaced"
    spaced.write_text("good\nsecret with-space\n")
    with pytest.raises(ValueError, match="key 2 of the key file") as err:
        parse_api_keys(f"@{spaced}")
    assert "secret" not in str(err.value)  # the message names the line, never the key
    with pytest.raises(ValidationError, match="per API key"):
        Settings(rate_limit_images_per_s=5)
    with pytest.raises(ValidationError, match="token is empty"):
        Settings(metrics_token="  ")


@pytest.mark.parametrize("value,expected", [
    ("@/nonexistent/gan-api-keys", "GAN_API_KEYS: Value error, cannot read the key file /nonexistent/gan-api-keys"),
    (" , ", "GAN_API_KEYS: Value error, no key in the list"),
])
def test_bad_keys_stop_start_up_with_one_line(value: str, expected: str) -> None:
    res = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "GAN_API_KEYS": value})
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: " + expected) and len(res.stderr.strip().splitlines()) == 1
