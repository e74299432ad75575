"""Happy paths of every endpoint, determinism and ETags."""

from __future__ import annotations

import numpy as np
import pytest

from service.rendering import grid_size
from tests.helpers import GRAY, RGB, RGB_LABELS, UNCOND, Served, png_array

pytestmark = pytest.mark.anyio


async def test_generate_grid_shape_and_headers(served: Served) -> None:
    r = await served.client.post("/generate", json={"label": "sneaker", "n": 6, "nrow": 3, "seed": 5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == GRAY and r.headers["x-seed"] == "5" and r.headers["x-label"] == "sneaker"
    img = png_array(r.content)
    assert img.shape == grid_size(6, 28, 3, 2, 1) == (2 * 30 + 2, 3 * 30 + 2)
    assert r.headers["x-request-id"]


async def test_rgb_model_gives_rgb_png_with_scale(served: Served) -> None:
    r = await served.client.post("/generate", json={"model": RGB, "label": "blue-thing", "n": 4, "scale": 2,
                                                     "padding": 0})
    assert r.status_code == 200, r.text
    img = png_array(r.content)
    assert img.shape == (2 * 32 * 2, 2 * 32 * 2, 3)
    assert img.std() > 0  # not a blank image
    assert np.array_equal(img[::2, ::2], img[1::2, 1::2])  # nearest-neighbour upscaling


async def test_unconditional_model_needs_no_label(served: Served) -> None:
    r = await served.client.post("/generate", json={"model": UNCOND, "n": 2})
    assert r.status_code == 200, r.text
    assert "x-label" not in r.headers


@pytest.mark.parametrize("label", ["sneaker", "Sneaker", "SNEAKER", 7, "7"])
async def test_label_accepts_slug_official_name_and_index(served: Served, label: object) -> None:
    ref = await served.client.post("/generate", json={"label": "sneaker", "n": 2, "seed": 3})
    r = await served.client.post("/generate", json={"label": label, "n": 2, "seed": 3})
    assert r.status_code == 200, r.text
    assert r.headers["x-label"] == "sneaker"
    assert r.content == ref.content


async def test_official_name_with_punctuation(served: Served) -> None:
    r = await served.client.post("/generate", json={"label": "t-shirt/top", "n": 1})
    assert r.status_code == 200, r.text
    assert r.headers["x-label"] == "t-shirt"


async def test_explicit_seed_is_deterministic_and_has_etag(served: Served) -> None:
    body = {"label": "bag", "n": 4, "seed": 123}
    a = await served.client.post("/generate", json=body)
    b = await served.client.post("/generate", json=body)
    assert a.content == b.content
    assert a.headers["etag"] == b.headers["etag"] and a.headers["etag"].startswith('W/"')
    c = await served.client.post("/generate", json={**body, "seed": 124})
    assert c.content != a.content and c.headers["etag"] != a.headers["etag"]
    again = await served.client.post("/generate", json=body, headers={"If-None-Match": a.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["x-seed"] == "123"


async def test_random_seed_is_returned_and_reproduces(served: Served) -> None:
    a = await served.client.post("/generate", json={"label": "coat", "n": 3})
    assert a.status_code == 200 and "etag" not in a.headers
    seed = int(a.headers["x-seed"])
    b = await served.client.post("/generate", json={"label": "coat", "n": 3, "seed": seed})
    assert b.content == a.content


async def test_different_labels_differ(served: Served) -> None:
    a = await served.client.post("/generate", json={"label": 0, "n": 2, "seed": 1})
    b = await served.client.post("/generate", json={"label": 1, "n": 2, "seed": 1})
    assert a.content != b.content


async def test_interpolate_strip(served: Served) -> None:
    r = await served.client.get("/interpolate", params={"label": "sneaker", "steps": 5, "seed_from": 1,
                                                         "seed_to": 9})
    assert r.status_code == 200, r.text
    assert png_array(r.content).shape == (28 + 4, 5 * 30 + 2)
    assert r.headers["x-seed"] == "1" and r.headers["x-seed-to"] == "9" and "etag" in r.headers
    again = await served.client.get("/interpolate", params={"label": "sneaker", "steps": 5, "seed_from": 1,
                                                             "seed_to": 9})
    assert again.content == r.content


async def test_interpolate_ends_match_generate(served: Served) -> None:
    """Frame 0 of a walk from seed s is the first image of /generate with seed s."""
    strip = png_array((await served.client.get(
        "/interpolate", params={"label": "bag", "steps": 3, "seed_from": 11, "padding": 0})).content)
    single = png_array((await served.client.post(
        "/generate", json={"label": "bag", "n": 1, "seed": 11, "padding": 0})).content)
    assert np.array_equal(strip[:, :28], single)


async def test_interpolate_between_classes_and_methods(served: Served) -> None:
    same = await served.client.get("/interpolate", params={"label": "bag", "steps": 4, "seed_from": 2})
    walk = await served.client.get("/interpolate", params={"label": "bag", "label_to": "Ankle boot", "steps": 4,
                                                            "seed_from": 2})
    lerp = await served.client.get("/interpolate", params={"label": "bag", "steps": 4, "seed_from": 2,
                                                            "method": "lerp", "model": GRAY})
    assert same.status_code == walk.status_code == lerp.status_code == 200
    assert walk.headers["x-label-to"] == "ankle-boot"
    a, b = png_array(same.content), png_array(walk.content)
    assert np.array_equal(a[:, :30], b[:, :30])  # first frame: same class, same latent
    assert not np.array_equal(a[:, -30:], b[:, -30:])  # last frame: the other class
    assert lerp.content != same.content


async def test_interpolate_rgb_and_unconditional(served: Served) -> None:
    r = await served.client.get("/interpolate", params={"model": RGB, "label": "red-thing", "steps": 3})
    assert r.status_code == 200 and png_array(r.content).shape[2] == 3
    u = await served.client.get("/interpolate", params={"model": UNCOND, "steps": 3})
    assert u.status_code == 200, u.text


async def test_models_lists_labels_sizes_and_metrics(served: Served) -> None:
    r = await served.client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == GRAY
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {GRAY, RGB, UNCOND}
    gray, rgb = by_name[GRAY], by_name[RGB]
    assert gray["labels"][7] == "sneaker" and gray["label_aliases"]["Ankle boot"] == "ankle-boot"
    assert (gray["image_size"], gray["channels"], gray["latent_dim"]) == (28, 1, 8)
    assert gray["metrics"] == {"fid": 12.5} and gray["default"] is True and gray["loaded"] is True
    assert (rgb["image_size"], rgb["channels"], rgb["labels"]) == (32, 3, RGB_LABELS)
    assert by_name[UNCOND]["conditional"] is False


async def test_default_model_falls_back_to_first_loaded(make_settings) -> None:  # noqa: ANN001
    from tests.helpers import serve

    async with serve(make_settings(default_model="not-there")) as s:
        body = (await s.client.get("/models")).json()
        assert body["default"] == body["models"][0]["name"]
        r = await s.client.post("/generate", json={"label": 1, "n": 1})
        assert r.status_code == 200 and r.headers["x-model"] == body["default"]


async def test_health_ready_docs_and_page(served: Served) -> None:
    assert (await served.client.get("/healthz")).json() == {"status": "ok"}
    ready = await served.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert (await served.client.get("/docs")).status_code == 200
    spec = (await served.client.get("/openapi.json")).json()
    assert {"/generate", "/interpolate", "/models", "/readyz"} <= set(spec["paths"])
    page = await served.client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text and 'id="grid"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained, no CDN


async def test_request_id_is_echoed(served: Served) -> None:
    r = await served.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await served.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


async def test_every_get_route_answers_head(served: Served) -> None:
    """Uptime checks and link checkers send HEAD: it got 405 on every route. Now a GET route
    answers HEAD with the GET's status and headers and no body, counted under its route."""
    for path in ("/healthz", "/readyz", "/models", "/", f"/generate?label=bag&n=1&seed=3&model={GRAY}"):
        get = await served.client.get(path)
        head = await served.client.head(path)
        assert (head.status_code, head.content) == (get.status_code, b""), path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.headers["content-length"] == get.headers["content-length"], path
    assert (await served.client.head("/no-such-path")).status_code == 404
    assert (await served.client.head("/generate")).status_code == 422  # GET's answer: label is required
    metrics = (await served.client.get("/metrics")).text
    assert 'gan_requests_total{method="HEAD",route="/healthz",status="200"}' in metrics


async def test_an_unconditional_model_lists_no_labels_even_if_its_data_had_classes(make_settings, tmp_path) -> None:  # noqa: ANN001
    """A folder dataset's run records its classes whatever the recipe's conditioning, so the
    config of an unconditional model trained on one holds labels it does not take; /models
    listed them, and the page then sent one with every request (422)."""
    from gancore.networks.dcgan import ConditionalGenerator
    from gancore.weights import save_generator
    from tests.helpers import serve

    args = dict(latent_dim=8, num_classes=0, embed_dim=4, channels=1, image_size=28, base_width=16)
    save_generator(tmp_path / "folder-uncond", ConditionalGenerator(**args), "dcgan", args,
                   ["alpha", "beta"], {"Alpha!": "alpha"}, None)
    async with serve(make_settings(weights_dir=tmp_path, default_model="folder-uncond")) as s:
        info = (await s.client.get("/models")).json()["models"][0]
        assert (info["conditional"], info["labels"], info["label_aliases"]) == (False, [], {})
        assert (await s.client.post("/generate", json={"n": 2})).status_code == 200
