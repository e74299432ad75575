"""POST /generate: a PNG grid of n images of one class.

`handle_generate` is the whole request: the front (service/middleware.py) calls it directly for
every POST /generate, and the FastAPI route below calls it too, so the two cannot drift; the
route is what OpenAPI, /docs and the schema fuzzing see.
"""

from __future__ import annotations

from typing import Any

import torch
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive

from gancore.sampling import seeded_latents
from service.errors import ApiError
from service.ratelimit import charge_images
from service.rendering import PngGrid, default_nrow
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
from service.schemas import GenerateRequest

router = APIRouter(tags=["images"])

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "PNG grid"}}
IMAGE_ERRORS = (404, 422, 500, 503, 504)
JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


def parse_body(body: bytes, content_type: str | None) -> GenerateRequest:
    """The JSON body as a GenerateRequest; 415 for a body sent as another media type, 422 naming
    the field otherwise."""
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(
                415, "unsupported_media_type",
                f"body: sent as {media or 'an empty type'}; send the JSON object with the header "
                "Content-Type: application/json (curl: -H 'content-type: application/json')",
                "body",
            )
    if not body.strip():
        raise ApiError(422, "invalid_input",
                       'body: required; send a JSON object such as {"label": "sneaker", "n": 16}', "body")
    try:
        return GenerateRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


async def handle_generate(state: Any, raw: bytes, headers: Headers, request_id: str,
                          scope_state: dict[str, Any], receive: Receive | None = None) -> Response:
    """A grid of `n` images of class `label`. `X-Seed` returns the seed; an explicit seed makes
    the response deterministic and gives it an ETag."""
    settings, registry = state.settings, state.registry
    body = parse_body(raw, headers.get("content-type"))
    entry = registry.get(body.model)
    runner, batcher = entry.runner, entry.batcher
    assert runner is not None and batcher is not None
    scope_state["model"] = entry.name
    check_max("n", body.n, settings.max_n, "GAN_MAX_N")
    charge_images(state, scope_state, body.n, "n")  # per-key rate limit (429); a no-op without GAN_API_KEYS
    batcher.admit(body.n, settings.request_timeout_s)  # 503 now, before any work for this request
    check_max("scale", body.scale, settings.max_scale, "GAN_MAX_SCALE")
    nrow = body.nrow if body.nrow is not None else default_nrow(body.n)
    check_pixels(settings, body.n, runner.image_size, nrow, body.padding, body.scale)
    label = label_id(entry, body.label, "label", required=True)
    seed = body.seed if body.seed is not None else random_seed()
    out_headers = {"X-Model": entry.name, "X-Seed": str(seed)}
    if label is not None:
        out_headers["X-Label"] = runner.config["labels"][label]
    etag = None
    if body.seed is not None:
        params = {"route": "generate", "label": label, "n": body.n, "seed": seed, "nrow": nrow,
                  "padding": body.padding, "scale": body.scale}
        etag = etag_for(entry, params)
        if not_modified(headers.get("if-none-match"), etag):
            return png_response(None, out_headers, etag)

    z = seeded_latents(seed, body.n, runner.latent_dim)  # (n, D), from this request's seed only
    labels = None if label is None else torch.full((body.n,), label, dtype=torch.long)
    png = await unless_client_leaves(batcher.submit(
        z, labels, None, None, timeout_s=settings.request_timeout_s, request_id=request_id,
        render=PngGrid(nrow, body.padding, body.scale),
    ), receive)
    return png_response(png, out_headers, etag)


@router.post("/generate", response_class=Response, openapi_extra=JSON_BODY,
             responses={**PNG_RESPONSE, **error_responses(*IMAGE_ERRORS, 413, 415)})
async def generate(request: Request) -> Response:
    """A grid of `n` images of class `label` (body: GenerateRequest). `X-Seed` returns the seed;
    an explicit seed makes the response deterministic and gives it an ETag."""
    state = request.scope.setdefault("state", {})
    return await handle_generate(request.app.state, await request.body(), request.headers,
                                 str(state.get("request_id", "-")), state, request.receive)
