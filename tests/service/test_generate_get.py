"""GET /generate: POST's grid from a query string, byte for byte, with the same errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from service.routes.generate import plain_query
from service.schemas import GenerateRequest, InterpolateRequest
from tests.helpers import UNCOND, Served, png_array
from tests.service.test_auth import metric

pytestmark = pytest.mark.anyio

SAME_HEADERS = ("content-type", "etag", "x-model", "x-label", "x-seed", "x-truncation")


@pytest.mark.parametrize("accept", ["image/png", "image/webp", "application/json"])
async def test_get_gives_the_bytes_and_headers_of_post(served: Served, accept: str) -> None:
    body = {"label": "sneaker", "n": 5, "seed": 42, "nrow": 2, "padding": 1, "scale": 2, "truncation": 0.8}
    post = await served.client.post("/generate", json=body, headers={"accept": accept})
    get = await served.client.get("/generate", params=body, headers={"accept": accept})
    assert post.status_code == get.status_code == 200, get.text
    assert get.content == post.content
    for name in SAME_HEADERS:
        assert get.headers.get(name) == post.headers.get(name), name


async def test_get_defaults_labels_by_index_and_unconditional_models(served: Served) -> None:
    by_index = await served.client.get("/generate?label=7&seed=3")
    by_slug = await served.client.post("/generate", json={"label": "sneaker", "seed": 3})
    assert by_index.status_code == 200 and by_index.content == by_slug.content
    assert png_array(by_index.content).shape == (4 * 30 + 2, 4 * 30 + 2)  # n defaults to 16: a 4x4 grid
    r = await served.client.get(f"/generate?model={UNCOND}&n=2")
    assert r.status_code == 200 and "x-label" not in r.headers


async def test_get_without_seed_is_random_reproducible_and_has_no_etag(served: Served) -> None:
    a = await served.client.get("/generate?label=coat&n=2")
    assert a.status_code == 200 and "etag" not in a.headers
    again = await served.client.get(f"/generate?label=coat&n=2&seed={a.headers['x-seed']}")
    assert again.content == a.content


async def test_get_answers_304_to_its_etag(served: Served) -> None:
    url = "/generate?label=bag&n=3&seed=9"
    first = await served.client.get(url)
    again = await served.client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ("label=unicorn", 422, "unknown_label", "label"),
        ("n=1", 422, "invalid_input", "label"),
        ("label=bag&n=0", 422, "invalid_input", "n"),
        ("label=bag&n=65", 422, "invalid_input", "n"),  # over GAN_MAX_N (64 in the tests)
        ("label=bag&n=two", 422, "invalid_input", "n"),
        ("label=bag&seed=-1", 422, "invalid_input", "seed"),
        ("label=bag&scale=9", 422, "invalid_input", "scale"),
        ("label=bag&truncation=0", 422, "invalid_input", "truncation"),
        ("label=bag&truncation=nan", 422, "invalid_input", "truncation"),
        ("label=bag&latents=1,2", 422, "invalid_input", "latents"),
        ("label=bag&model=no-such-model", 404, "unknown_model", "model"),
        (f"label=bag&model={UNCOND}", 422, "invalid_input", "label"),
    ],
)
async def test_get_bad_query(served: Served, query: str, status: int, code: str, field: str) -> None:
    r = await served.client.get(f"/generate?{query}")
    assert r.status_code == status, r.text
    err = r.json()
    assert (err["error"], err["field"]) == (code, field), err
    assert field in err["message"]


async def test_get_is_in_the_openapi_schema(served: Served) -> None:
    paths = (await served.client.get("/openapi.json")).json()["paths"]
    assert {"get", "post"} <= set(paths["/generate"])
    params = {p["name"] for p in paths["/generate"]["get"]["parameters"]}
    assert params == {"label", "n", "seed", "model", "nrow", "padding", "scale", "truncation"}


@pytest.mark.parametrize(("path", "body"), [("/generate", GenerateRequest), ("/interpolate", InterpolateRequest)])
async def test_get_parameters_carry_the_post_bodys_defaults_bounds_and_help(served: Served, path: str,
                                                                            body: type[BaseModel]) -> None:
    # Declared from the body's fields (routes.common.query_from), so that the two cannot drift:
    # before, GET /interpolate's padding and model had no description and its scale another one.
    spec = (await served.client.get("/openapi.json")).json()
    fields = body.model_json_schema()["properties"]
    keys = ("default", "description", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    params = spec["paths"][path]["get"]["parameters"]
    assert params
    for param in params:
        field, schema = fields[param["name"]], {**param["schema"], "description": param.get("description")}
        assert schema["description"], param["name"]
        for key in keys:
            assert schema.get(key) == field.get(key), (param["name"], key)


# The front answers a plain query itself (routes.generate.plain_query) and hands any other to
# FastAPI's route. Both must give the same answer: a query with a name FastAPI ignores is not
# plain, so it takes the route, and must give the bytes and headers of the plain one.
@pytest.mark.parametrize(
    "query",
    ["label=bag&n=3&seed=5", "label=7&n=2&seed=11&nrow=1&padding=0&scale=2&truncation=0.75",
     "label=Ankle%20boot&seed=1&n=1", f"model={UNCOND}&n=2&seed=4", "label=bag&n=003&seed=0&truncation=1"],
)
async def test_plain_query_answered_by_the_front_matches_the_route(served: Served, query: str) -> None:
    front = await served.client.get(f"/generate?{query}")
    route = await served.client.get(f"/generate?{query}&ignored=1")
    assert front.status_code == route.status_code == 200, (front.text, route.text)
    assert front.content == route.content
    for name in SAME_HEADERS:
        assert front.headers.get(name) == route.headers.get(name), name


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("label=bag&n=3&seed=5", {"label": "bag", "n": 3, "seed": 5}),
        ("label=%E7%8C%AB&n=010", {"label": "猫", "n": 10}),  # UTF-8 escapes, leading zeros as int() reads them
        ("label=bag&truncation=0.5", {"label": "bag", "truncation": 0.5}),
        ("", {}),
    ],
)
def test_plain_query_reads_what_fastapi_reads(query: str, expected: dict[str, object]) -> None:
    body = plain_query(query.encode())
    assert body is not None
    assert body.model_dump(exclude_unset=True) == expected


@pytest.mark.parametrize(
    "query",
    ["label=bag&label=coat", "label=", "n=", "n=+3", "n=3.0", "n=-1", "n=0", "seed=1e3", "truncation=1e-1",
     "truncation=.5", "truncation=0", "truncation=nan", "latents=1,2", "unknown=1", "n=" + "9" * 30, "padding=33"],
)
def test_any_other_query_is_left_to_fastapi(query: str) -> None:
    assert plain_query(query.encode()) is None


async def test_the_front_answers_plain_queries_and_counts_each_request_once(served: Served,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import service.routes.generate as generate

    read: list[bool] = []
    real = generate.plain_query
    monkeypatch.setattr(generate, "plain_query", lambda q: read.append(real(q) is not None) or real(q))
    assert (await served.client.get("/generate?label=bag&n=1&seed=2")).status_code == 200
    assert (await served.client.get("/generate?label=bag&n=two")).status_code == 422
    assert read == [True, False]
    text = (await served.client.get("/metrics")).text
    for status in ("200", "422"):
        assert metric(text, "gan_requests", "gan_requests_total", method="GET", route="/generate", status=status) == 1


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("label=unicorn&seed=1", {}, 422),
        ("label=bag&n=65&seed=1", {}, 422),  # over GAN_MAX_N (64 in the tests)
        ("label=bag&n=2&seed=1&model=no-such-model", {}, 404),
        ("label=bag&n=2&seed=1", {"accept": "text/html"}, 406),
        ("label=bag&n=2&seed=1&scale=9", {}, 422),  # over GAN_MAX_SCALE
    ],
)
async def test_refusals_from_the_front_match_the_routes(served: Served, query: str, headers: dict[str, str],
                                                        status: int) -> None:
    front = await served.client.get(f"/generate?{query}", headers=headers)
    route = await served.client.get(f"/generate?{query}&ignored=1", headers=headers)
    assert front.status_code == route.status_code == status, (front.text, route.text)
    assert front.json() == route.json()
    assert front.headers.get("content-type") == route.headers.get("content-type")


async def test_a_304_from_the_front_matches_the_routes(served: Served) -> None:
    first = await served.client.get("/generate?label=bag&n=2&seed=5")
    etag = first.headers["etag"]
    front = await served.client.get("/generate?label=bag&n=2&seed=5", headers={"If-None-Match": etag})
    route = await served.client.get("/generate?label=bag&n=2&seed=5&ignored=1", headers={"If-None-Match": etag})
    assert front.status_code == route.status_code == 304
    for name in ("etag", "cache-control", "vary", "x-seed", "x-model"):
        assert front.headers.get(name) == route.headers.get(name), name
