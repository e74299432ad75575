"""POST /generate: a PNG grid of n images of one class."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from fastapi import APIRouter, Request, Response

from gancore.sampling import seeded_latents
from service.deps import RegistryDep, SettingsDep
from service.rendering import default_nrow, grid_png
from service.routes.common import (
    check_max,
    check_pixels,
    error_responses,
    etag_for,
    label_id,
    not_modified,
    png_response,
    random_seed,
)
from service.schemas import GenerateRequest

router = APIRouter(tags=["images"])

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "PNG grid"}}
IMAGE_ERRORS = (404, 422, 500, 503, 504)


@router.post("/generate", response_class=Response,
             responses={**PNG_RESPONSE, **error_responses(*IMAGE_ERRORS, 413)})
async def generate(body: GenerateRequest, request: Request, settings: SettingsDep, registry: RegistryDep) -> Response:
    """A grid of `n` images of class `label`. `X-Seed` returns the seed; an explicit seed makes
    the response deterministic and gives it an ETag."""
    entry = registry.get(body.model)
    runner = entry.runner
    assert runner is not None and entry.batcher is not None
    request.state.model = entry.name
    check_max("n", body.n, settings.max_n, "GAN_MAX_N")
    check_max("scale", body.scale, settings.max_scale, "GAN_MAX_SCALE")
    nrow = body.nrow if body.nrow is not None else default_nrow(body.n)
    check_pixels(settings, body.n, runner.image_size, nrow, body.padding, body.scale)
    label = label_id(entry, body.label, "label", required=True)
    seed = body.seed if body.seed is not None else random_seed()
    headers = {"X-Model": entry.name, "X-Seed": str(seed)}
    if label is not None:
        headers["X-Label"] = runner.config["labels"][label]
    etag = None
    if body.seed is not None:
        params = {"route": "generate", "label": label, "n": body.n, "seed": seed, "nrow": nrow,
                  "padding": body.padding, "scale": body.scale}
        etag = etag_for(entry, params)
        if not_modified(request, etag):
            return png_response(None, headers, etag)

    z = seeded_latents(seed, body.n, runner.latent_dim)  # (n, D), from this request's seed only
    labels = None if label is None else torch.full((body.n,), label, dtype=torch.long)
    png = await entry.batcher.submit(
        z, labels, None, None, timeout_s=settings.request_timeout_s, request_id=request.state.request_id,
        render=partial(grid_png, nrow=nrow, padding=body.padding, scale=body.scale),
    )
    return png_response(png, headers, etag)
