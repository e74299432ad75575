"""The models shipped in weights/ load and serve (skipped until training has exported some)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gancore.weights import FORMAT, artefact_format
from service.settings import Settings
from tests.helpers import png_array, serve

pytestmark = pytest.mark.anyio

SHIPPED = Path(__file__).resolve().parents[2] / "weights"


def shipped_models() -> list[Path]:
    if not SHIPPED.is_dir():
        return []
    return [p for p in sorted(SHIPPED.iterdir()) if artefact_format(p) == FORMAT]


@pytest.mark.skipif(not shipped_models(), reason="no exported model in weights/ yet")
async def test_shipped_weights_serve_every_label() -> None:
    async with serve(Settings(weights_dir=SHIPPED, device="cpu", max_batch=16, max_wait_ms=1)) as s:
        ready = await s.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert all(v == "loaded" for v in ready.json()["models"].values()), ready.json()
        assert {p.name for p in shipped_models()} <= set(ready.json()["models"])
        for model in (await s.client.get("/models")).json()["models"]:
            size, channels = model["image_size"], model["channels"]
            for label in model["labels"] or [None]:
                body = {"model": model["name"], "n": 2, "seed": 0, "padding": 0, "nrow": 2}
                if label is not None:
                    body["label"] = label
                r = await s.client.post("/generate", json=body)
                assert r.status_code == 200, r.text
                img = png_array(r.content)
                assert img.shape[:2] == (size, 2 * size) and (img.ndim == 3) == (channels == 3)
                assert img.std() > 1, f"{model['name']}/{label}: flat image"


@pytest.mark.skipif(not shipped_models(), reason="no exported model in weights/ yet")
async def test_shipped_weights_interpolate_in_their_colours() -> None:
    """GET /interpolate walks each shipped generator's latent space; a colour model's strip is
    RGB with channels that differ (not a grey image stored as RGB)."""
    async with serve(Settings(weights_dir=SHIPPED, device="cpu", max_batch=16, max_wait_ms=1)) as s:
        for model in (await s.client.get("/models")).json()["models"]:
            size, channels, labels = model["image_size"], model["channels"], model["labels"]
            params = {"model": model["name"], "steps": 4, "seed_from": 1, "seed_to": 2, "padding": 0}
            if labels:
                params |= {"label": labels[0], "label_to": labels[-1]}
            r = await s.client.get("/interpolate", params=params)
            assert r.status_code == 200, r.text
            strip = png_array(r.content)
            assert strip.shape[:2] == (size, 4 * size), (model["name"], strip.shape)
            if channels == 3:
                assert strip.ndim == 3 and strip.shape[2] == 3
                spread = strip.astype(float).std(axis=2).mean()  # how far the channels differ per pixel
                assert spread > 2, f"{model['name']}: colour strip looks grey ({spread:.2f})"
            else:
                assert strip.ndim == 2
            first, last = strip[:, :size], strip[:, -size:]
            assert abs(first.astype(float) - last.astype(float)).mean() > 1, f"{model['name']}: the walk does not move"
