"""Served pixels against the generator's own forward: every route, tile by tile.

The other service tests compare one answer of the service with another; these recompute each
tile from the weights folder (the same latents from `seeded_latents`, the same labels) and read
the tiles out of the PNG at the places the grid layout puts them, so a mirrored or transposed
image, a shuffled grid, a label mapped to the wrong class or a split request stitched in the
wrong order fails. Tolerance: one grey level (the service folds batch norm into the
convolutions and batches rows differently, which changes float rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gancore.images import to_uint8
from gancore.labels import FASHION_MNIST_SLUGS
from gancore.sampling import seeded_latents, slerp
from gancore.weights import load_classifier, load_generator
from tests.helpers import GRAY, RGB, RGB_LABELS, png_array, serve

pytestmark = pytest.mark.anyio

SHIPPED = Path(__file__).resolve().parents[2] / "weights"


def tiles(img: np.ndarray, n: int, size: int, nrow: int, padding: int, scale: int) -> list[np.ndarray]:
    """Cut n tiles (size x size, channels last) out of a grid PNG filled row by row."""
    if img.ndim == 2:
        img = img[:, :, None]
    ncol = max(1, min(nrow, n))
    step = (size + padding) * scale
    out = []
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = padding * scale + r * step, padding * scale + c * step
        tile = img[y : y + size * scale, x : x + size * scale]
        assert (tile == tile[::scale, ::scale].repeat(scale, 0).repeat(scale, 1)).all(), "not a nearest upscale"
        out.append(tile[::scale, ::scale])
    return out


def expected(model: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> list[np.ndarray]:
    """The generator's own uint8 images, (H, W, C) each."""
    with torch.no_grad():
        images = to_uint8(model(z, labels))
    return [im.permute(1, 2, 0).numpy() for im in images]


def assert_tiles_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        diff = np.abs(g.astype(int) - w.astype(int)).max()
        assert diff <= 1, f"tile {i} differs from the model's own image by {diff} grey levels"
        assert w.std() > 1, "a flat expected tile would prove nothing"


@pytest.mark.parametrize(("model", "label", "label_id", "n", "nrow", "padding", "scale"), [
    (GRAY, "sneaker", FASHION_MNIST_SLUGS.index("sneaker"), 6, 4, 2, 1),  # two rows, the second part-filled
    (GRAY, "Ankle boot", FASHION_MNIST_SLUGS.index("ankle-boot"), 5, 5, 0, 2),  # an alias, one row, upscaled
    (GRAY, 3, 3, 3, 1, 3, 1),  # a class index, one column
    (RGB, "blue-thing", RGB_LABELS.index("blue-thing"), 4, 2, 1, 3),  # colour channels in order
])
async def test_generate_grid_is_the_models_images_in_order(make_settings, weights_dir, model, label, label_id,
                                                          n, nrow, padding, scale) -> None:  # noqa: ANN001
    gen = load_generator(weights_dir / model)
    async with serve(make_settings()) as s:
        r = await s.client.post("/generate", json={"model": model, "label": label, "n": n, "seed": 11,
                                                   "nrow": nrow, "padding": padding, "scale": scale})
        assert r.status_code == 200, r.text
    size = gen.config["image_size"]
    got = tiles(png_array(r.content), n, size, nrow, padding, scale)
    z = seeded_latents(11, n, gen.latent_dim)
    assert_tiles_equal(got, expected(gen.model, z, torch.full((n,), label_id)))
    if model != GRAY:
        return
    # And not the images of a neighbouring class (in this model the label changes the pixels).
    other = expected(gen.model, z, torch.full((n,), (label_id + 1) % len(gen.labels)))
    assert max(np.abs(g.astype(int) - o.astype(int)).max() for g, o in zip(got, other, strict=True)) > 1


async def test_request_larger_than_a_batch_is_stitched_in_order(make_settings, weights_dir) -> None:  # noqa: ANN001
    gen = load_generator(weights_dir / GRAY)
    async with serve(make_settings(max_batch=8)) as s:
        r = await s.client.post("/generate", json={"label": 2, "n": 21, "seed": 5, "nrow": 7, "padding": 1})
        assert r.status_code == 200
        count = s.metrics.registry.get_sample_value("gan_batch_size_count", {"model": GRAY})
        assert count == 3  # 8 + 8 + 5: it really was split
    got = tiles(png_array(r.content), 21, 28, 7, 1, 1)
    assert_tiles_equal(got, expected(gen.model, seeded_latents(5, 21, gen.latent_dim), torch.full((21,), 2)))


async def test_interpolation_strip_is_the_models_walk(make_settings, weights_dir) -> None:  # noqa: ANN001
    gen = load_generator(weights_dir / GRAY)
    async with serve(make_settings()) as s:
        r = await s.client.get("/interpolate", params={"label": "bag", "steps": 7, "seed_from": 3, "seed_to": 9,
                                                       "padding": 2, "scale": 2})
        assert r.status_code == 200
    a, b = seeded_latents(3, 1, gen.latent_dim)[0], seeded_latents(9, 1, gen.latent_dim)[0]
    z = slerp(a, b, torch.linspace(0, 1, 7)).float()
    got = tiles(png_array(r.content), 7, 28, 7, 2, 2)
    assert_tiles_equal(got, expected(gen.model, z, torch.full((7,), FASHION_MNIST_SLUGS.index("bag"))))
    # The ends are the two seeds' own images.
    assert_tiles_equal([got[0], got[-1]], expected(gen.model, torch.stack([a, b]),
                                                   torch.full((2,), FASHION_MNIST_SLUGS.index("bag"))))


async def test_class_mix_walks_the_label_embedding(make_settings, weights_dir) -> None:  # noqa: ANN001
    gen = load_generator(weights_dir / GRAY)
    start, end = FASHION_MNIST_SLUGS.index("sneaker"), FASHION_MNIST_SLUGS.index("ankle-boot")
    async with serve(make_settings()) as s:
        r = await s.client.get("/interpolate", params={"label": "sneaker", "label_to": "ankle-boot", "steps": 5,
                                                       "seed_from": 4, "seed_to": 4, "padding": 0})
        assert r.status_code == 200
    got = tiles(png_array(r.content), 5, 28, 5, 0, 1)
    z = seeded_latents(4, 1, gen.latent_dim).expand(5, -1)
    t = torch.linspace(0, 1, 5)[:, None]
    with torch.no_grad():
        emb = (1 - t) * gen.model.label_embedding(torch.full((5,), start)) + t * gen.model.label_embedding(
            torch.full((5,), end))
        walk = to_uint8(gen.model.forward_embedded(z, emb))
    assert_tiles_equal(got, [im.permute(1, 2, 0).numpy() for im in walk])
    # The ends are plain forwards of the two classes.
    assert_tiles_equal([got[0], got[-1]], expected(gen.model, z[:2], torch.tensor([start, end])))


# ---------------------------------------------------------------- the shipped models, judged by the shipped classifier

SHIPPED_GENERATORS = [p.name for p in sorted(SHIPPED.glob("fashion-mnist-*")) if (p / "generator.safetensors").is_file()]
CLASSIFIER = SHIPPED / "fashion-mnist-classifier"
N_PER_CLASS = 16


@pytest.mark.skipif(not SHIPPED_GENERATORS or not CLASSIFIER.is_dir(), reason="no shipped Fashion-MNIST models")
@pytest.mark.parametrize("model", SHIPPED_GENERATORS)
async def test_shipped_model_draws_the_requested_class(model: str) -> None:
    """Through POST /generate, every label's images are classified as that label by the shipped
    classifier at least 80% of the time (the cards report 0.94-0.95 on 10,000 samples): a label
    mapped to the wrong class, or noise, fails. The service's own pixels are also checked
    against the model's forward."""
    from service.settings import Settings

    clf = load_classifier(CLASSIFIER).model.eval()
    gen = load_generator(SHIPPED / model)
    hits, grids = 0, []
    async with serve(Settings(weights_dir=SHIPPED, device="cpu", max_batch=N_PER_CLASS, max_wait_ms=0)) as s:
        for c, label in enumerate(gen.labels):
            r = await s.client.post("/generate", json={"model": model, "label": label, "n": N_PER_CLASS,
                                                       "seed": 100 + c, "nrow": N_PER_CLASS, "padding": 0})
            assert r.status_code == 200, r.text
            got = tiles(png_array(r.content), N_PER_CLASS, 28, N_PER_CLASS, 0, 1)
            images = torch.from_numpy(np.stack(got)).permute(0, 3, 1, 2)  # uint8 (N, 1, 28, 28)
            with torch.no_grad():
                pred = clf.head(clf.features(images.float() / 127.5 - 1)).argmax(1)
            hits += int((pred == c).sum())
            grids.append((got, seeded_latents(100 + c, N_PER_CLASS, gen.latent_dim), c))
    accuracy = hits / (N_PER_CLASS * len(gen.labels))
    assert accuracy >= 0.8, f"{model}: conditional accuracy {accuracy:.3f} through the service"
    got, z, c = grids[0]
    assert_tiles_equal(got, expected(gen.model, z, torch.full((N_PER_CLASS,), c)))
