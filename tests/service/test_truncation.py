"""Truncation (psi) on /generate and /interpolate: bounded, deterministic latents, the same pixels
alone or batched, X-Truncation and the ETag, and a 422 naming `truncation` for a bad psi."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from gancore.sampling import seeded_latents, truncation_threshold
from tests.helpers import Served, png_array

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}
LATENT_DIM = 8  # the tiny models' (tests/helpers.py: write_model)


async def test_truncated_latents_are_bounded_and_deterministic(served: Served) -> None:
    free = (await served.client.post("/generate", json={"label": "bag", "n": 32, "seed": 5}, headers=JSON)).json()
    z_free = torch.tensor(free["latents"])
    assert free["truncation"] == 1.0 and z_free.abs().max() > 2  # 256 draws: some beyond every bound below
    for psi, bound in ((0.9, 1.645), (0.7, 1.036), (0.5, 0.674)):
        body = {"label": "bag", "n": 32, "seed": 5, "truncation": psi}
        a = await served.client.post("/generate", json=body, headers=JSON)
        b = await served.client.post("/generate", json=body, headers=JSON)
        assert a.status_code == 200, a.text
        assert a.content == b.content and a.headers["x-truncation"] == str(psi)
        doc = a.json()
        assert (doc["seed"], doc["truncation"]) == (5, psi)
        z = torch.tensor(doc["latents"], dtype=torch.float32)  # (32, 8)
        assert z.shape == (32, LATENT_DIM)
        assert torch.equal(z, seeded_latents(5, 32, LATENT_DIM, truncation=psi))  # what gancore draws, bit for bit
        assert abs(truncation_threshold(psi) - bound) < 1e-3
        assert z.abs().max() <= truncation_threshold(psi) + 1e-6
        inside = z_free.abs() <= truncation_threshold(psi)
        assert inside.any() and not inside.all()
        assert torch.equal(z[inside], z_free[inside])  # entries inside the bound are the untruncated draw's


async def test_truncation_changes_the_image_and_the_etag(served: Served) -> None:
    body = {"label": "coat", "n": 9, "seed": 21}
    plain = await served.client.post("/generate", json=body)
    one = await served.client.post("/generate", json={**body, "truncation": 1})
    half = await served.client.post("/generate", json={**body, "truncation": 0.5})
    assert plain.status_code == one.status_code == half.status_code == 200
    assert plain.headers["x-truncation"] == one.headers["x-truncation"] == "1.0"
    assert one.content == plain.content and one.headers["etag"] == plain.headers["etag"]  # 1 is the default: off
    assert not np.array_equal(png_array(half.content), png_array(plain.content))
    assert half.headers["etag"] != plain.headers["etag"]
    again = await served.client.post("/generate", json={**body, "truncation": 0.5},
                                     headers={"If-None-Match": half.headers["etag"]})
    assert again.status_code == 304 and again.headers["x-truncation"] == "0.5"


async def test_truncated_requests_give_the_same_pixels_batched_or_alone(served: Served) -> None:
    bodies = [{"label": i, "n": 3, "seed": 40 + i, "truncation": psi} for i, psi in enumerate((0.3, 0.6, 0.9, 1.0))]
    alone = [(await served.client.post("/generate", json=b)).content for b in bodies]
    batched = await asyncio.gather(*(served.client.post("/generate", json=b) for b in bodies))
    assert [r.content for r in batched] == alone


@pytest.mark.parametrize("value", [0, -0.5, 1.5, 1.0000001, "0.5", True, None, [0.5]])
async def test_bad_truncation_is_422_naming_it(served: Served, value: object) -> None:
    r = await served.client.post("/generate", json={"label": "bag", "n": 2, "seed": 1, "truncation": value})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "truncation" and "truncation" in r.json()["message"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
async def test_truncation_must_be_finite(served: Served, token: bytes) -> None:
    # Python's JSON (and pydantic's) read NaN and Infinity; they are refused as numbers, not passed on
    body = b'{"label": "bag", "n": 2, "truncation": ' + token + b"}"
    r = await served.client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "truncation", r.text


@pytest.mark.parametrize("value", ["0", "-1", "1.01", "nan", "inf", "half"])
async def test_bad_truncation_on_get_interpolate(served: Served, value: str) -> None:
    r = await served.client.get("/interpolate", params={"label": "bag", "truncation": value})
    assert r.status_code == 422 and r.json()["field"] == "truncation", r.text


@pytest.mark.parametrize("value", [0, -1, 1.01, "0.5"])
async def test_bad_truncation_on_post_interpolate(served: Served, value: object) -> None:
    r = await served.client.post("/interpolate", json={"label": "bag", "truncation": value})
    assert r.status_code == 422 and r.json()["field"] == "truncation", r.text


async def test_interpolate_truncates_the_seeds_latents(served: Served) -> None:
    params = {"label": "bag", "steps": 4, "seed_from": 3, "seed_to": 8, "truncation": 0.6, "padding": 0}
    walk = await served.client.get("/interpolate", params=params, headers=JSON)
    assert walk.status_code == 200, walk.text
    assert walk.headers["x-truncation"] == "0.6"
    doc = walk.json()
    assert doc["truncation"] == 0.6 and (doc["seed_from"], doc["seed_to"]) == (3, 8)
    z = torch.tensor(doc["latents"])  # (4, 8): the ends are the seeds' truncated latents
    assert torch.equal(z[0], seeded_latents(3, 1, LATENT_DIM, 0.6)[0])
    assert torch.allclose(z[-1], seeded_latents(8, 1, LATENT_DIM, 0.6)[0], atol=1e-6)
    # frame 0 is /generate's single image of that seed and truncation
    strip = png_array((await served.client.get("/interpolate", params=params)).content)
    single = png_array((await served.client.post(
        "/generate", json={"label": "bag", "n": 1, "seed": 3, "truncation": 0.6, "padding": 0})).content)
    assert np.array_equal(strip[:, :28], single)
    untruncated = await served.client.get("/interpolate", params={**params, "truncation": 1})
    assert untruncated.content != (await served.client.get("/interpolate", params=params)).content
    etags = {(await served.client.get("/interpolate", params={**params, "truncation": psi})).headers["etag"]
             for psi in (0.6, 0.7, 1.0)}
    assert len(etags) == 3
