"""GET and POST /interpolate: a strip walking from one latent (and class) to another, as PNG,
lossless WebP, or JSON with each frame's latent.

GET walks between the latents of two seeds; POST takes the same options as a JSON body and may
give the two latents themselves. Both hand their options to `walk`, the one place a walk is made.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from fastapi import APIRouter, Request, Response

from gancore.sampling import MAX_SEED, lerp, seeded_latents, slerp
from service.deps import RegistryDep, SettingsDep
from service.errors import ApiError
from service.ratelimit import charge_images
from service.registry import Registry
from service.rendering import RenderSpec
from service.routes.common import (
    check_max,
    check_pixels,
    error_responses,
    etag_for,
    header_list,
    image_response,
    image_responses,
    json_body,
    label_id,
    latents_digest,
    latents_tensor,
    negotiate,
    not_modified,
    parse_body,
    query_from,
    random_seed,
    unless_client_leaves,
)
from service.routes.generate import IMAGE_ERRORS
from service.schemas import InterpolateJson, InterpolateRequest
from service.settings import Settings

router = APIRouter(tags=["images"])

RESPONSES = {**image_responses(InterpolateJson, "Strip of `steps` frames"), **error_responses(*IMAGE_ERRORS)}
EXAMPLE_BODY = '{"label": "sneaker", "steps": 8, "latent_from": [...], "latent_to": [...]}'


@router.get("/interpolate", response_class=Response, responses=RESPONSES)
async def interpolate(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    label: str | None = query_from(InterpolateRequest, "label"),
    steps: int = query_from(InterpolateRequest, "steps"),
    seed_from: int | None = query_from(InterpolateRequest, "seed_from"),
    seed_to: int | None = query_from(InterpolateRequest, "seed_to"),
    truncation: float = query_from(InterpolateRequest, "truncation"),
    label_to: str | None = query_from(InterpolateRequest, "label_to"),
    method: Literal["slerp", "lerp"] = query_from(InterpolateRequest, "method"),
    model: str | None = query_from(InterpolateRequest, "model"),
    padding: int = query_from(InterpolateRequest, "padding"),
    scale: int = query_from(InterpolateRequest, "scale"),
) -> Response:
    """`steps` images from the latent of `seed_from` to that of `seed_to`; with `label_to`, the
    class embedding moves from `label` to `label_to` along the way. PNG, lossless WebP or JSON
    (each frame's latent and PNG) by the Accept header."""
    options = InterpolateRequest.model_construct(  # validated by the query declarations, InterpolateRequest's bounds
        label=label, label_to=label_to, steps=steps, seed_from=seed_from, seed_to=seed_to, truncation=truncation,
        method=method, model=model, padding=padding, scale=scale,
    )
    return await walk(request, settings, registry, options)


@router.post("/interpolate", response_class=Response, openapi_extra=json_body(InterpolateRequest),
             responses={**RESPONSES, **error_responses(413, 415)})
async def interpolate_between(request: Request, settings: SettingsDep, registry: RegistryDep) -> Response:
    """The walk of GET /interpolate with its options as a JSON body (InterpolateRequest), which
    may give the two latents to walk between (`latent_from`, `latent_to`) instead of seeds."""
    options = parse_body(await request.body(), request.headers, InterpolateRequest,
                         EXAMPLE_BODY)
    return await walk(request, settings, registry, options)


def given_ends(options: InterpolateRequest, latent_dim: int, model: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The two latents the request gives, (D,) float32 each, or None when it walks between seeds;
    422 for one without the other, or beside a seed or a truncation (which would draw them)."""
    if options.latent_from is None and options.latent_to is None:
        return None
    for field, other in (("latent_from", "latent_to"), ("latent_to", "latent_from")):
        if getattr(options, field) is None:
            raise ApiError(422, "invalid_input", f"{field}: required with {other}; send both latents", field)
    for field in ("seed_from", "seed_to", "truncation"):
        if field in options.model_fields_set:
            raise ApiError(422, "invalid_input",
                           f"{field}: not with latent_from and latent_to, which are the latents to walk between; "
                           "send latents or seeds", field)
    assert options.latent_from is not None and options.latent_to is not None
    a = latents_tensor([options.latent_from], latent_dim, "latent_from", model, vector=True)[0]
    b = latents_tensor([options.latent_to], latent_dim, "latent_to", model, vector=True)[0]
    return a, b


async def walk(request: Request, settings: Settings, registry: Registry, options: InterpolateRequest) -> Response:
    """The strip of GET and POST /interpolate. `X-Seed` and `X-Seed-To` reproduce a walk between
    seeds; explicit seeds or latents make it deterministic and give it an ETag."""
    fmt = negotiate(header_list(request.headers, "accept"))
    entry = registry.get(options.model)
    runner = entry.runner
    assert runner is not None and entry.batcher is not None
    request.state.model = entry.name
    steps, padding, scale = options.steps, options.padding, options.scale
    check_max("steps", steps, settings.max_steps, "GAN_MAX_STEPS")
    check_max("steps", steps, settings.queue_size, "GAN_QUEUE_SIZE")  # more could never be admitted
    check_max("scale", scale, settings.max_scale, "GAN_MAX_SCALE")
    check_pixels(settings, steps, runner.image_size, steps, padding, scale, count_field="steps")
    start = label_id(entry, options.label, "label", required=True)
    end = label_id(entry, options.label_to, "label_to", required=False)
    if end is not None and not runner.can_mix_labels:
        raise ApiError(
            422, "invalid_input", f"label_to: model {entry.name!r} cannot walk between classes", "label_to"
        )
    ends = given_ends(options, runner.latent_dim, entry.name)
    headers = {"X-Model": entry.name}
    first: int | None = None
    last: int | None = None
    truncation: float | None = None
    if ends is None:
        first = options.seed_from if options.seed_from is not None else random_seed()
        # the next seed, or the one before at the top of the range (seed_to must stay a valid seed)
        last = options.seed_to if options.seed_to is not None else (first + 1 if first < MAX_SEED else first - 1)
        truncation = options.truncation
        headers.update({"X-Seed": str(first), "X-Seed-To": str(last), "X-Truncation": str(truncation)})
        source: dict[str, Any] = {"seed_from": first, "seed_to": last, "truncation": truncation}
    else:
        source = {"latents": latents_digest(*ends)}
    if start is not None:
        headers["X-Label"] = runner.config["labels"][start]
        headers["X-Label-To"] = runner.config["labels"][end if end is not None else start]
    etag = None
    private = "key_digest" in request.scope["state"]  # the request needed an API key: no shared caching
    if options.seed_from is not None or ends is not None:
        params = {"route": "interpolate", "format": fmt, "label": start, "label_to": end, "steps": steps,
                  "method": options.method, "padding": padding, "scale": scale, **source}
        etag = etag_for(entry, params)
        if not_modified(header_list(request.headers, "if-none-match"), etag):
            return image_response(None, fmt, headers, etag, private=private)

    # admitted first (503 now), then the per-key rate limit (429), once the walk is valid and not a
    # 304, as in /generate: a refusal makes no images and costs none. No await from here to submit.
    expected = entry.batcher.admit(steps, settings.request_timeout_s)
    charge_images(request.app.state, request.scope["state"], steps, "steps")
    if ends is None:
        assert first is not None and last is not None
        a = seeded_latents(first, 1, runner.latent_dim, options.truncation)[0]  # (D,)
        b = seeded_latents(last, 1, runner.latent_dim, options.truncation)[0]  # (D,)
    else:
        a, b = ends
    t = torch.linspace(0, 1, steps)  # (S,)
    z = (slerp if options.method == "slerp" else lerp)(a, b, t).float()  # (S, D)
    labels = labels_to = mix = None
    if start is not None:
        labels = torch.full((steps,), start, dtype=torch.long)
        if end is not None:
            labels_to, mix = torch.full((steps,), end, dtype=torch.long), t
    meta = None
    if fmt == "json":
        meta = {"model": entry.name, "label": headers.get("X-Label"), "label_to": headers.get("X-Label-To"),
                "seed_from": first, "seed_to": last, "truncation": truncation, "method": options.method,
                "t": t.tolist()}
    result = await unless_client_leaves(entry.batcher.submit(
        z, labels, labels_to, mix, timeout_s=settings.request_timeout_s, request_id=request.state.request_id,
        render=RenderSpec(fmt, steps, padding, scale, meta), expected=expected,
    ), request.receive)
    return image_response(result, fmt, headers, etag, private=private)
