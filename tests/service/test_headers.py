"""Response headers a client or a cache acts on: names that are not ASCII, and the cache policy
of deterministic images (with and without API keys)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from tests.helpers import GRAY, serve, write_model

pytestmark = pytest.mark.anyio

NAME, LABELS = "snow✓", ["猫", "bag"]


async def test_names_that_are_not_ascii_are_percent_encoded_in_headers(make_settings, tmp_path: Path) -> None:  # noqa: ANN001
    """A model or label name beyond Latin-1 cannot go into an HTTP/1.1 header as it is: the
    answer was a 500 for every request to that model. Now the header carries it percent-encoded
    (UTF-8), and the JSON body carries it as it is."""
    write_model(tmp_path / NAME, 4, 1, 28, LABELS)
    async with serve(make_settings(weights_dir=tmp_path, default_model=NAME)) as s:
        r = await s.client.get("/generate", params={"label": 0, "n": 1, "seed": 3})
        assert r.status_code == 200, r.text
        assert r.headers["x-model"] == quote(NAME, safe="") and unquote(r.headers["x-model"]) == NAME
        assert unquote(r.headers["x-label"]) == "猫"
        r = await s.client.post("/interpolate", json={"label": "猫", "label_to": "bag", "steps": 2, "seed_from": 1})
        assert r.status_code == 200, r.text
        assert [unquote(r.headers[h]) for h in ("x-model", "x-label", "x-label-to")] == [NAME, "猫", "bag"]
        r = await s.client.post("/generate", json={"label": "猫", "n": 1, "seed": 3},
                                headers={"Accept": "application/json"})
        assert r.status_code == 200 and (r.json()["model"], r.json()["label"]) == (NAME, "猫")
        r = await s.client.post("/generate", json={"label": "bag", "n": 1, "seed": 3})
        assert r.headers["x-label"] == "bag"  # an ASCII name stays as it is


async def test_deterministic_images_are_revalidated_and_private_behind_keys(make_settings) -> None:  # noqa: ANN001
    """An image with an ETag may be stored but is revalidated before reuse (its ETag changes
    with the weights, which a reload swaps), and a shared cache must not keep one that needed an
    API key: it would hand it to clients without one."""
    body = {"label": "bag", "n": 1, "seed": 5, "model": GRAY}
    async with serve(make_settings()) as s:
        r = await s.client.post("/generate", json=body)
        assert r.headers["cache-control"] == "public, no-cache" and r.headers["etag"]
        again = await s.client.post("/generate", json=body, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "public, no-cache"
        r = await s.client.post("/generate", json={"label": "bag", "n": 1, "model": GRAY})  # random seed
        assert r.headers["cache-control"] == "no-store"
    async with serve(make_settings(api_keys="key-one")) as s:
        auth = {"Authorization": "Bearer key-one"}
        r = await s.client.post("/generate", json=body, headers=auth)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
        r = await s.client.get("/interpolate", params={"label": "bag", "seed_from": 1, "steps": 2}, headers=auth)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
        again = await s.client.post("/generate", json=body, headers={**auth, "If-None-Match": r.headers["etag"]})
        assert again.status_code == 200  # another request's ETag


async def test_the_largest_seed_walks_to_a_seed_that_can_be_sent_back(make_settings) -> None:  # noqa: ANN001
    """seed_to defaults to seed_from + 1, which past the largest seed is not a valid seed: the
    headers promised a strip that could not be asked for again."""
    top = 2**63 - 1
    async with serve(make_settings()) as s:
        r = await s.client.get("/interpolate", params={"label": "bag", "seed_from": top, "steps": 2})
        assert r.status_code == 200 and r.headers["x-seed-to"] == str(top - 1)
        again = await s.client.get("/interpolate", params={"label": "bag", "seed_from": top, "seed_to": top - 1,
                                                          "steps": 2})
        assert again.status_code == 200 and again.content == r.content and again.headers["etag"] == r.headers["etag"]
        r = await s.client.get("/interpolate", params={"label": "bag", "seed_from": 7, "steps": 2})
        assert r.headers["x-seed-to"] == "8"
