"""GET /interpolate: a PNG strip walking from one latent (and class) to another."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from fastapi import APIRouter, Query, Request, Response

from gancore.sampling import lerp, seeded_latents, slerp
from service.deps import RegistryDep, SettingsDep
from service.errors import ApiError
from service.ratelimit import charge_images
from service.rendering import PngGrid
from service.routes.common import (
    check_max,
    check_pixels,
    error_responses,
    etag_for,
    label_id,
    not_modified,
    png_response,
    random_seed,
    unless_client_leaves,
)
from service.routes.generate import IMAGE_ERRORS, PNG_RESPONSE
from service.schemas import MAX_SEED

router = APIRouter(tags=["images"])

Seed = Annotated[int | None, Query(ge=0, le=MAX_SEED)]


@router.get("/interpolate", response_class=Response, responses={**PNG_RESPONSE, **error_responses(*IMAGE_ERRORS)})
async def interpolate(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    label: Annotated[str | None, Query(description="Class at the start; omit for unconditional models")] = None,
    steps: Annotated[int, Query(ge=2, description="Frames in the strip (at most GAN_MAX_STEPS)")] = 8,
    seed_from: Annotated[Seed, Query(description="Seed of the first latent; random when omitted")] = None,
    seed_to: Annotated[Seed, Query(description="Seed of the last latent; seed_from + 1 when omitted")] = None,
    label_to: Annotated[str | None, Query(description="Class at the end (walks the label embedding)")] = None,
    method: Annotated[Literal["slerp", "lerp"], Query()] = "slerp",
    model: Annotated[str | None, Query()] = None,
    padding: Annotated[int, Query(ge=0, le=32)] = 2,
    scale: Annotated[int, Query(ge=1, description="Integer upscaling (at most GAN_MAX_SCALE)")] = 1,
) -> Response:
    """`steps` images from the latent of `seed_from` to that of `seed_to`; with `label_to`, the
    class embedding moves from `label` to `label_to` along the way."""
    entry = registry.get(model)
    runner = entry.runner
    assert runner is not None and entry.batcher is not None
    request.state.model = entry.name
    check_max("steps", steps, settings.max_steps, "GAN_MAX_STEPS")
    charge_images(request.app.state, request.scope["state"], steps, "steps")  # per-key rate limit (429)
    check_max("scale", scale, settings.max_scale, "GAN_MAX_SCALE")
    check_pixels(settings, steps, runner.image_size, steps, padding, scale)
    start = label_id(entry, label, "label", required=True)
    end = label_id(entry, label_to, "label_to", required=False)
    if end is not None and not runner.can_mix_labels:
        raise ApiError(
            422, "invalid_input", f"label_to: model {entry.name!r} cannot walk between classes", "label_to"
        )
    first = seed_from if seed_from is not None else random_seed()
    last = seed_to if seed_to is not None else first + 1
    headers = {"X-Model": entry.name, "X-Seed": str(first), "X-Seed-To": str(last)}
    if start is not None:
        headers["X-Label"] = runner.config["labels"][start]
        headers["X-Label-To"] = runner.config["labels"][end if end is not None else start]
    etag = None
    if seed_from is not None:
        params = {"route": "interpolate", "label": start, "label_to": end, "steps": steps, "seed_from": first,
                  "seed_to": last, "method": method, "padding": padding, "scale": scale}
        etag = etag_for(entry, params)
        if not_modified(request.headers.get("if-none-match"), etag):
            return png_response(None, headers, etag)

    a = seeded_latents(first, 1, runner.latent_dim)[0]  # (D,)
    b = seeded_latents(last, 1, runner.latent_dim)[0]  # (D,)
    t = torch.linspace(0, 1, steps)  # (S,)
    z = (slerp if method == "slerp" else lerp)(a, b, t).float()  # (S, D)
    labels = labels_to = mix = None
    if start is not None:
        labels = torch.full((steps,), start, dtype=torch.long)
        if end is not None:
            labels_to, mix = torch.full((steps,), end, dtype=torch.long), t
    png = await unless_client_leaves(entry.batcher.submit(
        z, labels, labels_to, mix, timeout_s=settings.request_timeout_s, request_id=request.state.request_id,
        render=PngGrid(steps, padding, scale),
    ), request.receive)
    return png_response(png, headers, etag)
