"""Every bad input gets its specific 4xx and a JSON body naming the field; never a 500."""

from __future__ import annotations

import pytest

from tests.helpers import GRAY, UNCOND, Served

pytestmark = pytest.mark.anyio

# (body, status, error code, field) -- limits from make_settings: max_n 64, max_scale 8
GENERATE_CASES = [
    ({"label": "not-a-class", "n": 1}, 422, "unknown_label", "label"),
    ({"label": 10, "n": 1}, 422, "unknown_label", "label"),
    ({"label": -1, "n": 1}, 422, "unknown_label", "label"),
    ({"label": True, "n": 1}, 422, "invalid_input", "label"),
    ({"n": 1}, 422, "invalid_input", "label"),
    ({"label": "bag", "n": 0}, 422, "invalid_input", "n"),
    ({"label": "bag", "n": 65}, 422, "invalid_input", "n"),
    ({"label": "bag", "n": "4"}, 422, "invalid_input", "n"),
    ({"label": "bag", "n": 2.5}, 422, "invalid_input", "n"),
    ({"label": "bag", "seed": -1}, 422, "invalid_input", "seed"),
    ({"label": "bag", "seed": 1.5}, 422, "invalid_input", "seed"),
    ({"label": "bag", "seed": "42"}, 422, "invalid_input", "seed"),
    ({"label": "bag", "seed": 2**64}, 422, "invalid_input", "seed"),
    ({"label": "bag", "scale": 0}, 422, "invalid_input", "scale"),
    ({"label": "bag", "scale": 9}, 422, "invalid_input", "scale"),
    ({"label": "bag", "nrow": 0}, 422, "invalid_input", "nrow"),
    ({"label": "bag", "padding": -1}, 422, "invalid_input", "padding"),
    ({"label": "bag", "colour": "red"}, 422, "invalid_input", "colour"),
    ({"label": "bag", "model": "no-such-model"}, 404, "unknown_model", "model"),
    ({"label": "bag", "model": 3}, 422, "invalid_input", "model"),
    ({"label": "bag", "model": UNCOND}, 422, "invalid_input", "label"),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), GENERATE_CASES)
async def test_generate_bad_input(served: Served, body: dict, status: int, code: str, field: str) -> None:
    r = await served.client.post("/generate", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert (err["error"], err["field"]) == (code, field), err
    assert field in err["message"]


async def test_unknown_label_lists_valid_labels(served: Served) -> None:
    err = (await served.client.post("/generate", json={"label": "unicorn"})).json()
    assert "sneaker" in err["valid"] and "ankle-boot" in err["valid"]
    assert "sneaker" in err["message"] and err["suggestion"] is None
    near = (await served.client.post("/generate", json={"label": "sneker"})).json()
    assert (near["error"], near["suggestion"]) == ("unknown_label", "sneaker"), near
    plural = await served.client.post("/generate", json={"label": "Sneakers", "n": 1, "seed": 3})
    exact = await served.client.post("/generate", json={"label": "sneaker", "n": 1, "seed": 3})
    assert plural.status_code == 200 and plural.content == exact.content


async def test_unknown_model_lists_models(served: Served) -> None:
    err = (await served.client.post("/generate", json={"label": 1, "model": "x"})).json()
    assert GRAY in err["valid"] and err["suggestion"] is None
    typo = (await served.client.post("/generate", json={"label": 1, "model": GRAY[:-2]})).json()
    assert typo["suggestion"] == GRAY and f"did you mean {GRAY!r}" in typo["message"], typo


@pytest.mark.parametrize(
    ("content", "field"),
    [(b'{"label": "bag", "n": ', "body"), (b"[1, 2]", "body"), (b"not json", "body"), (b"", "body")],
)
async def test_malformed_json(served: Served, content: bytes, field: str) -> None:
    r = await served.client.post("/generate", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


async def test_too_many_pixels(make_settings) -> None:  # noqa: ANN001
    from tests.helpers import serve

    async with serve(make_settings(max_pixels=100 * 100)) as s:
        r = await s.client.post("/generate", json={"label": 1, "n": 16, "scale": 2})
        assert r.status_code == 422 and r.json()["field"] == "scale"
        r = await s.client.post("/generate", json={"label": 1, "n": 16})
        assert r.status_code == 422 and r.json()["field"] == "n"
        r = await s.client.post("/generate", json={"label": 1, "n": 4})
        assert r.status_code == 200


async def test_body_too_large(served: Served) -> None:
    limit = served.app.state.settings.max_body_bytes
    assert limit == 1_048_576  # the default: 256 latents of 128 numbers as JSON fit (tests/service/test_latents.py)
    big = b'{"label": "bag", "pad": "' + b"x" * limit + b'"}'
    r = await served.client.post("/generate", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"

    async def chunks():  # noqa: ANN202 - no Content-Length: the limit applies to what streams in
        for _ in range(limit // 65_536 + 1):
            yield b" " * 65_536

    r = await served.client.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


INTERPOLATE_CASES = [
    ({"label": "bag", "steps": 1}, "steps"),
    ({"label": "bag", "steps": 13}, "steps"),
    ({"label": "bag", "steps": "many"}, "steps"),
    ({"label": "bag", "seed_from": -3}, "seed_from"),
    ({"label": "bag", "seed_from": "1.5"}, "seed_from"),
    ({"label": "bag", "seed_to": "x"}, "seed_to"),
    ({"label": "bag", "scale": 0}, "scale"),
    ({"label": "bag", "scale": 9}, "scale"),
    ({"label": "bag", "method": "cubic"}, "method"),
    ({"label": "nope"}, "label"),
    ({"label": "bag", "label_to": "nope"}, "label_to"),
    ({}, "label"),
    ({"model": UNCOND, "label": "bag"}, "label"),
]


@pytest.mark.parametrize(("params", "field"), INTERPOLATE_CASES)
async def test_interpolate_bad_input(served: Served, params: dict, field: str) -> None:
    r = await served.client.get("/interpolate", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


async def test_interpolate_unknown_model(served: Served) -> None:
    r = await served.client.get("/interpolate", params={"label": "bag", "model": "nope"})
    assert r.status_code == 404 and r.json()["field"] == "model"


async def test_unknown_route_and_method_are_json(served: Served) -> None:
    r = await served.client.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await served.client.put("/generate", json={"label": 1})
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert "GET /generate?label=" in r.json()["message"] and "POST /generate" in r.json()["message"]
