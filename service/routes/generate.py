"""POST /generate: a grid of n images of one class (PNG, lossless WebP, or JSON with the latents);
GET /generate: the same from a query string (no latents), for `<img src>` and plain links.

`handle_generate` is the whole POST request: the front (service/middleware.py) calls it directly
for every POST /generate, and the FastAPI route below calls it too, so the two cannot drift; the
route is what OpenAPI, /docs and the schema fuzzing see. The front answers a GET /generate whose
query string is plain (`plain_query`) itself too, through `handle_generate_query`; any other
query goes through FastAPI's routing, whose declarations word its errors. Both meet the same code
at `generate_grid`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import torch
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive

from gancore.sampling import seeded_latents
from service.errors import ApiError
from service.ratelimit import charge_images
from service.rendering import RenderSpec, default_nrow
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
from service.schemas import GenerateJson, GenerateRequest

router = APIRouter(tags=["images"])

IMAGE_ERRORS = (404, 406, 422, 500, 503, 504)
EXAMPLE_BODY = '{"label": "sneaker", "n": 16}'
# GET /generate's parameters as a plain query writes them (plain_query): integers as digits,
# truncation as a decimal number, names as any text but none.
QUERY_INTEGERS = frozenset({"n", "seed", "nrow", "padding", "scale"})
QUERY_TEXTS = frozenset({"label", "model"})
_DIGITS = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,19}(?:\.[0-9]{1,19})?")


def given_rows(body: GenerateRequest, max_n: int) -> int:
    """The image count of a request that sends its latents: their row count, which `n` may
    repeat but not contradict; a seed or a truncation beside them is refused, since the latents
    already are what those would draw."""
    assert body.latents is not None
    rows = len(body.latents)
    if rows > max_n:
        raise ApiError(422, "invalid_input",
                       f"latents: {rows} rows is over the limit of {max_n} images (set by GAN_MAX_N)", "latents")
    if "n" in body.model_fields_set and body.n != rows:
        raise ApiError(422, "invalid_input",
                       f"n: {body.n}, but latents has {rows} rows; omit n when sending latents", "n")
    for field in ("seed", "truncation"):
        if field in body.model_fields_set:
            raise ApiError(422, "invalid_input",
                           f"{field}: not with latents, which already are the draw that a seed and truncation "
                           f"make; send latents or seed/truncation", field)
    return rows


def request_context(request: Request) -> tuple[str, dict[str, Any]]:
    """(the request id the front gave this request, the scope's state that the front reads back
    for its access log and metrics), for the routes that FastAPI calls."""
    state = request.scope.setdefault("state", {})
    return str(state.get("request_id", "-")), state


async def handle_generate(state: Any, raw: bytes, headers: Headers, request_id: str,
                          scope_state: dict[str, Any], receive: Receive | None = None) -> Response:
    """A grid of `n` images of class `label`, in the format the Accept header asks for. `X-Seed`
    returns the seed; an explicit seed (or latents) makes the response deterministic and gives
    it an ETag."""
    body = parse_body(raw, headers, GenerateRequest, EXAMPLE_BODY)
    return await generate_grid(state, body, headers, request_id, scope_state, receive)


def plain_query(query_string: bytes) -> GenerateRequest | None:
    """GET /generate's query string as the POST body it mirrors, when it is plain: only the
    route's parameter names, each once, none empty, integers written as digits, truncation as a
    decimal number, every value within the body's bounds. None otherwise, and FastAPI's route
    answers (its query declarations word the errors, and it takes what else a query may hold,
    such as names it ignores); so a query read here means what it means there. Percent-escapes
    are decoded as Starlette's QueryParams does (Latin-1 bytes, then UTF-8 escapes)."""
    values: dict[str, Any] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in values or not value:
            return None
        if name in QUERY_TEXTS:
            values[name] = value
        elif name in QUERY_INTEGERS and _DIGITS.fullmatch(value):
            values[name] = int(value)
        elif name == "truncation" and _DECIMAL.fullmatch(value):
            values[name] = float(value)
        else:
            return None
    try:
        return GenerateRequest.model_validate(values)
    except ValidationError:
        return None


async def handle_generate_query(state: Any, query_string: bytes, headers: Headers, request_id: str,
                                scope_state: dict[str, Any], receive: Receive | None = None) -> Response | None:
    """GET /generate answered by the front when its query is plain (`plain_query`); None
    (nothing sent) when it is not, for FastAPI's route to answer."""
    body = plain_query(query_string)
    if body is None:
        return None
    return await generate_grid(state, body, headers, request_id, scope_state, receive)


async def generate_grid(state: Any, body: GenerateRequest, headers: Headers, request_id: str,
                        scope_state: dict[str, Any], receive: Receive | None = None) -> Response:
    """The request once its parameters are known, from a POST body or GET's query string."""
    settings, registry = state.settings, state.registry
    fmt = negotiate(header_list(headers, "accept"))
    entry = registry.get(body.model)
    runner, batcher = entry.runner, entry.batcher
    assert runner is not None and batcher is not None
    scope_state["model"] = entry.name
    n = body.n if body.latents is None else given_rows(body, settings.max_n)
    check_max("n", n, settings.max_n, "GAN_MAX_N")
    check_max("n", n, settings.queue_size, "GAN_QUEUE_SIZE")  # more could never be admitted (as /interpolate)
    check_max("scale", body.scale, settings.max_scale, "GAN_MAX_SCALE")
    nrow = body.nrow if body.nrow is not None else default_nrow(n)
    check_pixels(settings, n, runner.image_size, nrow, body.padding, body.scale)
    label = label_id(entry, body.label, "label", required=True)
    out_headers = {"X-Model": entry.name}
    if label is not None:
        out_headers["X-Label"] = runner.config["labels"][label]
    z: torch.Tensor | None = None
    seed: int | None = None
    truncation: float | None = None
    if body.latents is None:
        seed, truncation = (body.seed if body.seed is not None else random_seed()), body.truncation
        out_headers["X-Seed"], out_headers["X-Truncation"] = str(seed), str(truncation)
        source: dict[str, Any] = {"seed": seed, "truncation": truncation}
    else:
        z = latents_tensor(body.latents, runner.latent_dim, "latents", entry.name)  # (n, D)
        source = {"latents": latents_digest(z)}
    etag = None
    private = "key_digest" in scope_state  # the request needed an API key: no shared caching
    if body.seed is not None or z is not None:
        params = {"route": "generate", "format": fmt, "label": label, "n": n, "nrow": nrow,
                  "padding": body.padding, "scale": body.scale, **source}
        etag = etag_for(entry, params)
        if not_modified(header_list(headers, "if-none-match"), etag):
            return image_response(None, fmt, out_headers, etag, private=private)

    # Admitted (503 now, before any work for this request) once it is valid and not answered by
    # a 304: a cache's revalidation needs no forward, so a full queue does not refuse it (as on
    # /interpolate). Then the per-key rate limit (429): refusals and cache hits make no images,
    # so they cost none. A no-op without GAN_API_KEYS.
    expected = batcher.admit(n, settings.request_timeout_s)
    charge_images(state, scope_state, n, "n")
    if z is None:
        assert seed is not None
        z = seeded_latents(seed, n, runner.latent_dim, body.truncation)  # (n, D), from this request's seed only
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    meta = None
    if fmt == "json":
        meta = {"model": entry.name, "label": out_headers.get("X-Label"), "seed": seed, "truncation": truncation}
    result = await unless_client_leaves(batcher.submit(
        z, labels, None, None, timeout_s=settings.request_timeout_s, request_id=request_id,
        render=RenderSpec(fmt, nrow, body.padding, body.scale, meta), expected=expected,
    ), receive)
    return image_response(result, fmt, out_headers, etag, private=private)


@router.post("/generate", response_class=Response, openapi_extra=json_body(GenerateRequest),
             responses={**image_responses(GenerateJson, "Grid of n images"),
                        **error_responses(*IMAGE_ERRORS, 413, 415)})
async def generate(request: Request) -> Response:
    """A grid of `n` images of class `label` (body: GenerateRequest), or of the `latents` sent;
    PNG, lossless WebP or JSON (latents and one PNG per image) by the Accept header. `X-Seed`
    returns the seed; an explicit seed or latents make the response deterministic and give it
    an ETag."""
    request_id, state = request_context(request)
    return await handle_generate(request.app.state, await request.body(), request.headers, request_id, state,
                                 request.receive)


@router.get("/generate", response_class=Response,
            responses={**image_responses(GenerateJson, "Grid of n images"), **error_responses(*IMAGE_ERRORS)})
async def generate_from_query(
    request: Request,
    label: str | None = query_from(GenerateRequest, "label"),
    n: int = query_from(GenerateRequest, "n"),
    seed: int | None = query_from(GenerateRequest, "seed"),
    model: str | None = query_from(GenerateRequest, "model"),
    nrow: int | None = query_from(GenerateRequest, "nrow"),
    padding: int = query_from(GenerateRequest, "padding"),
    scale: int = query_from(GenerateRequest, "scale"),
    truncation: float = query_from(GenerateRequest, "truncation"),
) -> Response:
    """POST /generate's grid from a query string, e.g. `/generate?label=sneaker&n=16&seed=42`: a URL
    that an `<img>` tag or a browser can load. The same bytes as POST with the same parameters
    (and, with a seed, the same ETag); latents can only be sent with POST."""
    if "latents" in request.query_params:  # not silently ignored: the grid would not be the one asked for
        raise ApiError(422, "invalid_input", "latents: send them in a POST /generate body; GET takes "
                                             "label, n, seed, model, nrow, padding, scale and truncation", "latents")
    body = GenerateRequest.model_construct(  # validated by the query declarations, GenerateRequest's bounds
        label=label, n=n, seed=seed, model=model, nrow=nrow, padding=padding, scale=scale,
        truncation=truncation, latents=None,
    )
    request_id, state = request_context(request)
    return await generate_grid(request.app.state, body, request.headers, request_id, state, request.receive)
