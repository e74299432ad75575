"""Formats by content negotiation on /generate and /interpolate: PNG by default, lossless WebP
with the PNG's pixels, JSON with latents and per-image PNGs; q-values, 406, Vary and an ETag
per format; and the same through engine processes."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from service.routes.common import negotiate
from service.schemas import GenerateJson, InterpolateJson
from tests.helpers import RGB, Served, grid_tiles, png_array, serve, webp_array

pytestmark = pytest.mark.anyio

PNG, WEBP, JSON = "image/png", "image/webp", "application/json"
GENERATE = {"label": "sneaker", "n": 5, "seed": 3, "nrow": 3, "scale": 2}
WALK = {"label": "bag", "label_to": "coat", "steps": 4, "seed_from": 6}
BROWSER_IMG = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"  # Chrome's <img> Accept


def as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


async def ask(served: Served, route: str, accept: str | None, **extra: object):  # noqa: ANN201 - httpx.Response
    """The route's request (GENERATE or WALK, updated by `extra`; None drops a field)."""
    headers = {} if accept is None else {"Accept": accept}
    headers.update(extra.pop("headers", {}))
    body = {k: v for k, v in {**(GENERATE if route == "generate" else WALK), **extra}.items() if v is not None}
    if route == "generate":
        return await served.client.post("/generate", json=body, headers=headers)
    if route == "get-interpolate":
        return await served.client.get("/interpolate", params=body, headers=headers)
    return await served.client.post("/interpolate", json=body, headers=headers)


ROUTES = ["generate", "get-interpolate", "post-interpolate"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("model", [None, RGB])
async def test_webp_has_the_pixels_of_the_png(served: Served, route: str, model: str | None) -> None:
    extra = {} if model is None else {"model": model, "label": "blue-thing", "label_to": None}
    png = await ask(served, route, None, **extra)
    webp = await ask(served, route, WEBP, **extra)
    assert png.status_code == webp.status_code == 200, webp.text
    assert png.headers["content-type"] == PNG and webp.headers["content-type"] == WEBP
    assert np.array_equal(webp_array(webp.content), as_rgb(png_array(png.content)))


@pytest.mark.parametrize("route", ROUTES)
async def test_json_images_are_the_grid_s_images(served: Served, route: str) -> None:
    png = png_array((await ask(served, route, None)).content)
    r = await ask(served, route, JSON)
    assert r.status_code == 200 and r.headers["content-type"] == JSON, r.text
    doc = r.json()
    (GenerateJson if route == "generate" else InterpolateJson).model_validate(doc)  # the documented schema
    assert set(doc) == set((GenerateJson if route == "generate" else InterpolateJson).model_fields)
    n = GENERATE["n"] if route == "generate" else WALK["steps"]
    nrow = GENERATE["nrow"] if route == "generate" else n
    scale = GENERATE["scale"] if route == "generate" else 1
    assert len(doc["images"]) == len(doc["latents"]) == n and doc["model"]
    images = [png_array(base64.b64decode(b)) for b in doc["images"]]
    for image, tile in zip(images, grid_tiles(png, n, 28, nrow, 2, scale), strict=True):
        assert image.shape == (28 * scale, 28 * scale)
        assert np.array_equal(image, tile)
    if route != "generate":
        assert np.allclose(doc["t"], [0, 1 / 3, 2 / 3, 1])
        assert (doc["label"], doc["label_to"], doc["seed_from"], doc["method"]) == ("bag", "coat", 6, "slerp")
    else:
        assert (doc["label"], doc["seed"], doc["truncation"]) == ("sneaker", 3, 1.0)


@pytest.mark.parametrize(("accept", "expected"), [
    (None, PNG),
    ("", PNG),
    ("*/*", PNG),
    ("image/*", PNG),
    ("image/png", PNG),
    ("IMAGE/WEBP", WEBP),
    ("application/json", JSON),
    ("application/*", JSON),
    ("application/json; charset=utf-8", JSON),
    ("image/webp, image/png", PNG),  # equal q: the server's order
    ("image/webp;q=0.9, image/png;q=0.5", WEBP),
    ("image/png;q=0, */*", WEBP),  # q=0 excludes; then WebP before JSON
    ("image/*;q=0.5, application/json", JSON),
    ("image/*, image/png;q=0.1", WEBP),  # the most specific range sets png's q
    ("text/html, */*;q=0.1", PNG),
    ("text/html, application/json;q=0.2", JSON),
    (BROWSER_IMG, PNG),
    ("image/png;q=abc, image/webp", WEBP),  # a range that cannot be parsed is ignored
    ("image/webp;q=2, image/png;q=0.3", PNG),  # q outside 0..1 is ignored
    ("garbage, application/json", JSON),
])
async def test_the_accept_header_chooses_the_format(served: Served, accept: str | None, expected: str) -> None:
    for route in ROUTES:
        r = await ask(served, route, accept)
        assert r.status_code == 200, (route, r.text)
        assert r.headers["content-type"] == expected, route
        assert r.headers["vary"] == "Accept"


@pytest.mark.parametrize("accept", ["text/html", "image/png;q=0", "image/*;q=0, application/json;q=0",
                                    "application/xml", "image/gif, text/*", "*/*;q=0", "garbage"])
async def test_an_accept_nothing_satisfies_is_406(served: Served, accept: str) -> None:
    for route in ROUTES:
        r = await ask(served, route, accept)
        assert r.status_code == 406, (route, r.text)
        assert r.headers["content-type"] == JSON
        err = r.json()
        assert set(err) == {"error", "field", "message", "supported"}
        assert (err["error"], err["field"]) == ("not_acceptable", "accept")
        assert err["supported"] == [PNG, WEBP, JSON]
        assert accept in err["message"] and "image/png" in err["message"]


def test_negotiation_without_a_header_parses_nothing() -> None:
    """The plain request's path: no header and */* return before any parsing."""
    assert negotiate(None) == negotiate("") == negotiate("*/*") == "png"


@pytest.mark.parametrize("route", ROUTES)
async def test_each_format_has_its_own_etag_and_304(served: Served, route: str) -> None:
    tags = {}
    for accept in (PNG, WEBP, JSON):
        r = await ask(served, route, accept)
        assert r.status_code == 200 and r.headers["vary"] == "Accept"
        tags[accept] = r.headers["etag"]
        assert (await ask(served, route, accept)).headers["etag"] == tags[accept]  # deterministic
    assert len(set(tags.values())) == 3
    assert (await ask(served, route, None)).headers["etag"] == tags[PNG]  # no Accept is PNG
    for accept, tag in tags.items():
        same = await ask(served, route, accept, headers={"If-None-Match": tag})
        assert same.status_code == 304 and same.content == b"" and same.headers["vary"] == "Accept"
        assert same.headers["etag"] == tag
        others = [t for a, t in tags.items() if a != accept]
        other = await ask(served, route, accept, headers={"If-None-Match": ", ".join(others)})
        assert other.status_code == 200 and other.headers["content-type"] == accept


async def test_large_json_answer_spans_batches(served: Served) -> None:
    """n over max_batch (8): rows from two forwards, rendered together."""
    r = await served.client.post("/generate", json={"label": 4, "n": 11, "seed": 2, "padding": 0, "nrow": 11},
                                 headers={"Accept": JSON})
    grid = png_array((await served.client.post("/generate", json={"label": 4, "n": 11, "seed": 2, "padding": 0,
                                                                   "nrow": 11})).content)
    images = [png_array(base64.b64decode(b)) for b in r.json()["images"]]
    assert np.array_equal(np.concatenate(images, axis=1), grid)


async def test_openapi_documents_the_formats_and_406(served: Served) -> None:
    spec = (await served.client.get("/openapi.json")).json()
    for path, method, model in (("/generate", "post", "GenerateJson"), ("/interpolate", "get", "InterpolateJson"),
                                ("/interpolate", "post", "InterpolateJson")):
        responses = spec["paths"][path][method]["responses"]
        assert list(responses["200"]["content"]) == [PNG, WEBP, JSON]
        assert responses["200"]["content"][JSON]["schema"]["$ref"].endswith("/" + model)
        assert responses["406"]["content"][JSON]["schema"]["$ref"].endswith("/ErrorBody")
    body = spec["paths"]["/interpolate"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert {"latent_from", "latent_to", "truncation", "steps"} <= set(body["properties"])
    generate = spec["paths"]["/generate"]["post"]["requestBody"]["content"][JSON]["schema"]["properties"]
    assert {"latents", "truncation"} <= set(generate)
    params = {p["name"] for p in spec["paths"]["/interpolate"]["get"]["parameters"]}
    assert "truncation" in params


async def test_engine_processes_serve_every_format(make_settings) -> None:  # noqa: ANN001
    """The render spec travels to the engine as JSON and the body comes back as bytes: PNG, WebP
    and JSON through engine processes, with the same pixels as each other, and the JSON latents
    sent back give the PNG's pixels; n over max_batch too (rendered in the server process)."""
    async with serve(make_settings(engine="process")) as s:
        assert type(s.batcher().runner).__name__ == "EngineClient"
        for body in (GENERATE, {**GENERATE, "n": 11, "truncation": 0.7}, {**GENERATE, "model": RGB, "label": 2}):
            png = await s.client.post("/generate", json=body)
            webp = await s.client.post("/generate", json=body, headers={"Accept": WEBP})
            doc = await s.client.post("/generate", json=body, headers={"Accept": JSON})
            assert png.status_code == webp.status_code == doc.status_code == 200, doc.text
            assert np.array_equal(webp_array(webp.content), as_rgb(png_array(png.content)))
            layout = {k: body[k] for k in ("label", "nrow", "scale") if k in body} | {"model": body.get("model")}
            again = await s.client.post("/generate", json={**layout, "latents": doc.json()["latents"]})
            assert np.array_equal(png_array(again.content), png_array(png.content))
        walk = await s.client.post("/interpolate", json=WALK, headers={"Accept": JSON})
        strip = await s.client.get("/interpolate", params=WALK, headers={"Accept": WEBP})
        assert walk.status_code == strip.status_code == 200
        images = [as_rgb(png_array(base64.b64decode(b))) for b in walk.json()["images"]]
        for image, tile in zip(images, grid_tiles(webp_array(strip.content), 4, 28, 4, 2, 1), strict=True):
            assert np.array_equal(image, tile)
