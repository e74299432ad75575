"""Latents out and in: the JSON answer's latents, sent back, give the seeded request's pixels
exactly; POST /interpolate walks between two given latents as GET walks between two seeds';
every bad latent gets a 422 naming the field and the row and column at fault."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from gancore.sampling import seeded_latents
from service.settings import Settings
from tests.helpers import RGB, Served, png_array

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}
D = 8  # the tiny models' latent_dim


def f32_bits(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(torch.int32)


@pytest.mark.parametrize("body", [
    {"label": "sneaker", "n": 6, "seed": 7},
    {"label": "bag", "n": 5, "seed": 8, "truncation": 0.6, "nrow": 5, "scale": 2},
    {"model": RGB, "label": "green-thing", "n": 4, "seed": 9, "padding": 0},
    {"label": "coat", "n": 12, "seed": 10},  # over max_batch (8): rendered from two forwards
])
async def test_json_latents_sent_back_give_the_same_pixels(served: Served, body: dict) -> None:
    seeded = await served.client.post("/generate", json=body)
    answer = await served.client.post("/generate", json=body, headers=JSON)
    assert seeded.status_code == answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["seed"] == body["seed"] and len(doc["latents"]) == len(doc["images"]) == body["n"]
    # the latents are the seed's float32 draw, bit for bit, through the JSON text
    drawn = seeded_latents(body["seed"], body["n"], D, body.get("truncation", 1.0))
    assert torch.equal(f32_bits(doc["latents"]), drawn.view(torch.int32))
    layout = {k: v for k, v in body.items() if k in ("model", "label", "nrow", "padding", "scale")}
    again = await served.client.post("/generate", json={**layout, "latents": doc["latents"]})
    assert again.status_code == 200, again.text
    assert np.array_equal(png_array(again.content), png_array(seeded.content))  # byte for byte, decoded
    assert "x-seed" not in again.headers and "x-truncation" not in again.headers
    resent = (await served.client.post("/generate", json={**layout, "latents": doc["latents"]}, headers=JSON)).json()
    assert (resent["seed"], resent["truncation"]) == (None, None)
    assert resent["latents"] == doc["latents"] and resent["images"] == doc["images"]


async def test_float32_extremes_survive_the_json_round_trip(served: Served) -> None:
    """float32 -> Python float -> JSON text -> float -> float32 is exact, including subnormals,
    the largest float32 and negative zero; what goes in is what comes back out."""
    edges = [1e-45, -1e-45, 1.1754943508222875e-38, 3.4028234663852886e38, -3.4028234663852886e38, -0.0,
             0.1, 1 / 3, 2.0**-20, 123456.789]
    rows = [edges[:D], edges[D:] + [0.5] * (2 * D - len(edges)), torch.randn(D).tolist()]
    rows = [torch.tensor(r, dtype=torch.float32).tolist() for r in rows]  # float32 values, as Python floats
    r = await served.client.post("/generate", json={"label": 1, "latents": rows}, headers=JSON)
    assert r.status_code == 200, r.text
    back = r.json()["latents"]
    assert torch.equal(f32_bits(back), f32_bits(rows))
    assert struct.pack(">f", back[0][5]) == struct.pack(">f", -0.0)


async def test_n_may_repeat_the_row_count(served: Served) -> None:
    rows = seeded_latents(1, 3, D).tolist()
    a = await served.client.post("/generate", json={"label": 1, "latents": rows})
    b = await served.client.post("/generate", json={"label": 1, "latents": rows, "n": 3})
    assert a.status_code == b.status_code == 200 and a.content == b.content


async def test_given_latents_are_deterministic_with_an_etag(served: Served) -> None:
    rows = seeded_latents(4, 2, D).tolist()
    a = await served.client.post("/generate", json={"label": 1, "latents": rows})
    b = await served.client.post("/generate", json={"label": 1, "latents": rows},
                                 headers={"If-None-Match": a.headers["etag"]})
    assert b.status_code == 304
    rows[1][3] += 0.25
    c = await served.client.post("/generate", json={"label": 1, "latents": rows},
                                 headers={"If-None-Match": a.headers["etag"]})
    assert c.status_code == 200 and c.headers["etag"] != a.headers["etag"]


ROW = [0.5] * D
# (body, field, words the message must hold) -- make_settings: max_n 64
BAD_LATENTS = [
    ({"latents": [ROW, ROW[:-1]]}, "latents", ["row 1", "7 numbers", "8"]),
    ({"latents": [ROW, ROW + [0.5]]}, "latents", ["row 1", "9 numbers"]),
    ({"latents": [ROW] * 65}, "latents", ["65 rows", "64", "GAN_MAX_N"]),
    ({"latents": []}, "latents", []),
    ({"latents": [ROW, "x"]}, "latents", ["entry 1"]),  # pydantic's index: the second row is not a list
    ({"latents": [ROW, [0.5] * 3 + ["1.5"] + [0.5] * 4]}, "latents", ["row 1, column 3"]),
    ({"latents": [ROW, [0.5] * 3 + [True] + [0.5] * 4]}, "latents", ["row 1, column 3"]),
    ({"latents": [ROW, [0.5] * 6 + [1e39, 0.5]]}, "latents", ["row 1, column 6", "float32"]),
    ({"latents": [ROW, ROW], "n": 3}, "n", ["3", "2 rows"]),
    ({"latents": [ROW], "seed": 4}, "seed", ["latents"]),
    ({"latents": [ROW], "truncation": 0.7}, "truncation", ["latents"]),
    ({"latents": [ROW], "truncation": 1.0}, "truncation", ["latents"]),  # given at all: the latents are the draw
    ({"latents": ROW}, "latents", []),  # one vector, not a list of rows
]


@pytest.mark.parametrize(("extra", "field", "words"), BAD_LATENTS)
async def test_bad_latents_are_422_naming_the_field(served: Served, extra: dict, field: str, words: list) -> None:
    r = await served.client.post("/generate", json={"label": "bag", **extra})
    assert r.status_code == 422, r.text
    err = r.json()
    assert (err["error"], err["field"]) == ("invalid_input", field), err
    for word in [field, *words]:
        assert word in err["message"], err["message"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_refused_with_their_place(served: Served, token: bytes) -> None:
    """pydantic reads NaN and Infinity from JSON by default; latents must be finite."""
    row = b"[" + b", ".join([b"0.5"] * 5 + [token] + [b"0.5"] * 2) + b"]"
    body = b'{"label": "bag", "latents": [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], ' + row + b"]}"
    r = await served.client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "latents" and "row 1, column 5" in r.json()["message"]
    assert "finite" in r.json()["message"]


async def test_a_body_of_bad_entries_lists_a_few(served: Served) -> None:
    body = b'{"label": "bag", "latents": [' + b", ".join([b"[" + b", ".join([b"NaN"] * D) + b"]"] * 64) + b"]}"
    r = await served.client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and len(r.json()["problems"]) == 1
    assert "row 0, column 0" in r.json()["message"]


def test_256_latents_of_128_numbers_fit_the_default_body_limit() -> None:
    """GAN_MAX_BODY_BYTES' default takes GAN_MAX_N (256) rows of the shipped models' latent_dim
    (128), each number the longest a float32 takes as JSON from Python."""
    longest = -1.1754943508222875e-38  # 23 characters
    assert float(np.float32(longest)) == longest
    body = json.dumps({"label": "sneaker", "latents": [[longest] * 128] * 256})
    settings = Settings()
    assert settings.max_n == 256 and len(body) < settings.max_body_bytes


async def test_many_latents_are_served_under_the_default_limit(make_settings) -> None:  # noqa: ANN001
    from tests.helpers import serve

    async with serve(make_settings(max_n=256)) as s:  # the default GAN_MAX_BODY_BYTES
        rows = seeded_latents(12, 256, D).tolist()
        r = await s.client.post("/generate", json={"label": 2, "latents": rows, "padding": 0})
        assert r.status_code == 200, r.text
        seeded = await s.client.post("/generate", json={"label": 2, "n": 256, "seed": 12, "padding": 0})
        assert np.array_equal(png_array(r.content), png_array(seeded.content))


# ---------------------------------------------------------------- POST /interpolate


@pytest.mark.parametrize("options", [
    {"label": "bag"},
    {"label": "bag", "label_to": "coat", "method": "lerp", "steps": 5, "scale": 2},
    {"model": RGB, "label": "red-thing", "steps": 3, "padding": 0},
])
async def test_post_between_latents_equals_get_between_seeds(served: Served, options: dict) -> None:
    get = await served.client.get("/interpolate", params={**options, "seed_from": 3, "seed_to": 9})
    assert get.status_code == 200, get.text
    ends = {"latent_from": seeded_latents(3, 1, D)[0].tolist(), "latent_to": seeded_latents(9, 1, D)[0].tolist()}
    post = await served.client.post("/interpolate", json={**options, **ends})
    assert post.status_code == 200, post.text
    assert np.array_equal(png_array(post.content), png_array(get.content))
    assert "x-seed" not in post.headers and post.headers.get("x-label") == get.headers.get("x-label")
    get_doc = (await served.client.get("/interpolate", params={**options, "seed_from": 3, "seed_to": 9},
                                       headers=JSON)).json()
    post_doc = (await served.client.post("/interpolate", json={**options, **ends}, headers=JSON)).json()
    assert post_doc["latents"] == get_doc["latents"] and post_doc["images"] == get_doc["images"]
    assert post_doc["t"] == get_doc["t"] and (post_doc["seed_from"], post_doc["truncation"]) == (None, None)


async def test_post_with_seeds_is_the_get_walk(served: Served) -> None:
    options = {"label": "bag", "label_to": "sneaker", "steps": 4, "seed_from": 5, "truncation": 0.8}
    get = await served.client.get("/interpolate", params=options)
    post = await served.client.post("/interpolate", json=options)
    assert post.status_code == 200 and post.content == get.content
    assert post.headers["etag"] == get.headers["etag"] and post.headers["x-seed-to"] == "6"


async def test_walk_frames_re_render_as_generate(served: Served) -> None:
    """Each frame's latent from the JSON walk, sent to /generate, gives that frame (same class)."""
    doc = (await served.client.get("/interpolate", params={"label": "bag", "steps": 5, "seed_from": 2, "padding": 0},
                                   headers=JSON)).json()
    grid = await served.client.post("/generate", json={"label": "bag", "latents": doc["latents"], "nrow": 5,
                                                       "padding": 0})
    strip = await served.client.get("/interpolate", params={"label": "bag", "steps": 5, "seed_from": 2, "padding": 0})
    assert np.array_equal(png_array(grid.content), png_array(strip.content))


async def test_a_zero_latent_walks_a_straight_line(served: Served) -> None:
    """slerp has no direction for a zero vector: the walk falls back to lerp instead of NaN."""
    ends = {"latent_from": [0.0] * D, "latent_to": seeded_latents(1, 1, D)[0].tolist()}
    doc = (await served.client.post("/interpolate", json={"label": 1, "steps": 3, **ends}, headers=JSON)).json()
    z = torch.tensor(doc["latents"])
    assert torch.isfinite(z).all() and torch.allclose(z[1], 0.5 * torch.tensor(ends["latent_to"]))


BAD_WALKS = [
    ({"latent_from": ROW}, "latent_to", ["latent_from"]),
    ({"latent_to": ROW}, "latent_from", ["latent_to"]),
    ({"latent_from": ROW[:-1], "latent_to": ROW}, "latent_from", ["7 numbers"]),
    ({"latent_from": ROW, "latent_to": ROW + [1.0]}, "latent_to", ["9 numbers"]),
    ({"latent_from": ROW, "latent_to": [0.5] * 4 + [1e39] + [0.5] * 3}, "latent_to", ["entry 4", "float32"]),
    ({"latent_from": [0.5, "x"] + [0.5] * 6, "latent_to": ROW}, "latent_from", ["entry 1"]),
    ({"latent_from": ROW, "latent_to": ROW, "seed_from": 1}, "seed_from", ["latent"]),
    ({"latent_from": ROW, "latent_to": ROW, "seed_to": 1}, "seed_to", ["latent"]),
    ({"latent_from": ROW, "latent_to": ROW, "truncation": 0.5}, "truncation", ["latent"]),
    ({"latent_from": [ROW], "latent_to": ROW}, "latent_from", []),
    ({"steps": 13}, "steps", ["GAN_MAX_STEPS"]),
    ({"steps": 1}, "steps", []),
    ({"method": "cubic"}, "method", []),
    ({"seed_from": -1}, "seed_from", []),
    ({"steps": "4"}, "steps", []),
    ({"colour": "red"}, "colour", ["unknown field"]),
    ({"label": "unicorn"}, "label", []),
]


@pytest.mark.parametrize(("extra", "field", "words"), BAD_WALKS)
async def test_bad_post_interpolate_is_4xx_naming_the_field(served: Served, extra: dict, field: str,
                                                             words: list) -> None:
    r = await served.client.post("/interpolate", json={"label": "bag", **extra})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    for word in [field, *words]:
        assert word in r.json()["message"], r.json()["message"]


async def test_post_interpolate_body_errors(served: Served) -> None:
    r = await served.client.post("/interpolate", content=b"label=bag", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["field"] == "body"
    r = await served.client.post("/interpolate", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = await served.client.post("/interpolate", content=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = await served.client.post("/interpolate", json={"label": "bag", "model": "nope"})
    assert r.status_code == 404 and r.json()["field"] == "model"
