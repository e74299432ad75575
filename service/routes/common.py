"""What /generate and /interpolate share: bodies, limits, labels, seeds, latents, the response
format (content negotiation), ETags and the image response."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote

import torch
from fastapi import Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive

from gancore.labels import UnknownLabel, resolve_label
from gancore.sampling import DRAW_VERSION
from service.errors import ApiError, ClientGone
from service.registry import ModelEntry
from service.rendering import MEDIA_TYPES, grid_size
from service.schemas import ErrorBody
from service.settings import Settings

T = TypeVar("T")
# A request still waiting after this long starts watching for its client to hang up (unless_client_leaves).
WATCH_AFTER_S = 0.1
Body = TypeVar("Body", bound=BaseModel)


def query_from(model: type[BaseModel], name: str) -> Any:
    """A query parameter declared from the body field of that name: its default, description and
    bounds, so that a GET route and the POST body it mirrors cannot drift apart. Only strictness
    differs, since a query string is text: n=16 arrives as "16" and is read as 16."""
    field = model.model_fields[name]
    limits: dict[str, Any] = {
        key: value for rule in field.metadata for key in ("gt", "ge", "lt", "le")
        if (value := getattr(rule, key, None)) is not None
    }
    if any(getattr(rule, "allow_inf_nan", True) is False for rule in field.metadata):
        limits["allow_inf_nan"] = False
    return Query(field.default, description=field.description, **limits)

RANDOM_SEED_BOUND = 2**31  # random seeds stay short enough to read and type back

_ERROR_STATUS = {
    404: "Unknown model",
    413: "Request body over GAN_MAX_BODY_BYTES",
    406: "None of the formats the Accept header allows; `supported` lists the media types served",
    415: "Body not sent as application/json; send the header Content-Type: application/json",
    422: "Invalid input; `field` names it",
    500: "Failure of the service; the log has the details under `request_id`",
    503: "Model unavailable or queue full; see Retry-After",
    504: "Not served within GAN_REQUEST_TIMEOUT_S",
}


def image_responses(json_model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses[200]` of an image route: the same `what` as PNG (the default), lossless
    WebP, or the JSON document `json_model`, as the Accept header asks."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"model": json_model, "content": {"image/png": binary, "image/webp": binary},
                  "description": f"{what}: image/png (default), image/webp (lossless, the same pixels) or "
                                 "application/json (latents and one base64 PNG per image), by the Accept header"}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a route that reads its JSON body itself (parse_body)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


def parse_body(body: bytes, headers: Headers, model: type[Body], example: str) -> Body:
    """The JSON body as a `model`; 415 for a body sent as another media type or compressed, 422
    naming the field otherwise (`example`: a body to suggest when there is none)."""
    content_type = headers.get("content-type")
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
        _check_encoding(headers)
        raise ApiError(422, "invalid_input", f"body: required; send a JSON object such as {example}", "body")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        _check_encoding(headers)  # only once the body failed: a served request never pays for the look-up
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def _check_encoding(headers: Headers) -> None:
    """415 for a body that a Content-Encoding (gzip, br) says is compressed: this service reads
    plain JSON only, so such a body reads as malformed and its 422 would mislead."""
    encodings = [e.strip().lower() for e in ",".join(headers.getlist("content-encoding")).split(",")]
    unsupported = [e for e in encodings if e and e != "identity"]
    if unsupported:
        raise ApiError(
            415, "unsupported_media_type",
            f"content-encoding: {', '.join(unsupported)} is not supported; send the JSON body uncompressed "
            "(no Content-Encoding header, or identity)",
            "content-encoding", supported=["identity"],
        )


def negotiate(accept: str | None) -> str:
    """The response format ("png", "webp" or "json") for an Accept header; 406 when it allows none.

    No header, an empty one and */* mean PNG without parsing anything (the plain request's path).
    Otherwise each format gets the q-value of the most specific range that matches it (image/png
    over image/* over */*; q=0 excludes), the highest q wins, and ties go to PNG, then WebP, then
    JSON (so a browser's image Accept, which lists image/webp beside image/*, still gets PNG).
    Ranges that cannot be parsed, or with a q outside 0..1, are ignored.
    """
    if not accept or accept == "*/*":
        return "png"
    ranges: list[tuple[str, str, float]] = []  # (type, subtype, q)
    for part in accept.lower().split(","):
        media, _, params = part.partition(";")
        kind, slash, sub = media.strip().partition("/")
        if not (slash and kind and sub):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = math.nan
                break
        if 0.0 <= q <= 1.0:
            ranges.append((kind, sub, q))
    best, best_q = None, 0.0
    for fmt, media_type in MEDIA_TYPES.items():
        kind, sub = media_type.split("/")
        q, specificity = 0.0, -1
        for r_kind, r_sub, r_q in ranges:
            if (r_kind, r_sub) == (kind, sub):
                level = 2
            elif r_kind == kind and r_sub == "*":
                level = 1
            elif (r_kind, r_sub) == ("*", "*"):
                level = 0
            else:
                continue
            if level > specificity or (level == specificity and r_q > q):
                q, specificity = r_q, level
        if q > best_q:
            best, best_q = fmt, q
    if best is None:
        supported = list(MEDIA_TYPES.values())
        shown = accept if len(accept) <= 120 else accept[:117] + "..."
        raise ApiError(
            406, "not_acceptable",
            f"accept: {shown!r} allows none of {', '.join(supported)}; send one of them in the Accept header "
            "(or none, for PNG)",
            "accept", supported=supported,
        )
    return best


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer, all with the ErrorBody
    schema (this also replaces FastAPI's default 422 schema, which is not what we send)."""
    return {s: {"model": ErrorBody, "description": _ERROR_STATUS[s]} for s in statuses}


async def unless_client_leaves(work: Awaitable[T], receive: Receive | None) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise ClientGone.

    Cancelling a batcher submission cancels its queued rows, which the batcher then drops before
    their forward: a client that hangs up takes its work with it. The watcher is one small task
    whose completion cancels this one (cheaper than asyncio.wait over both), started only once
    the request has waited WATCH_AFTER_S: most requests are answered sooner and never pay for a
    task and its cancellation, and a client that leaves earlier costs at most that wait's share
    of a batch. Refusals never get here.
    """
    if receive is None:
        return await work
    current = asyncio.current_task()
    assert current is not None
    watcher: asyncio.Future[None] | None = None

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_disconnect(receive))
        watcher.add_done_callback(lambda w: None if w.cancelled() else current.cancel())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher is not None and watcher.done() and not watcher.cancelled():
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def random_seed() -> int:
    return secrets.randbelow(RANDOM_SEED_BOUND)


def check_max(field: str, value: int, limit: int, setting: str) -> None:
    if value > limit:
        raise ApiError(
            422, "invalid_input", f"{field}: {value} is over the limit of {limit} (set by {setting})", field
        )


def label_id(entry: ModelEntry, value: str | int | None, field: str, required: bool) -> int | None:
    """Class id for `value` (slug, official name in any case, or index); 422 naming `field`."""
    runner = entry.runner
    assert runner is not None
    labels = list(runner.config.get("labels", []))
    if not runner.conditional:
        if value is not None:
            raise ApiError(
                422, "invalid_input", f"{field}: model {entry.name!r} is unconditional; omit {field}", field
            )
        return None
    if value is None:
        if not required:
            return None
        raise ApiError(
            422, "invalid_input", f"{field}: required by model {entry.name!r}; valid labels: {', '.join(labels)}",
            field, valid=labels,
        )
    try:
        return resolve_label(value, labels, runner.config.get("label_aliases"))
    except UnknownLabel as exc:
        raise ApiError(422, "unknown_label", f"{field}: {exc}", field, valid=list(exc.valid),
                       suggestion=exc.suggestion) from None


def latents_tensor(values: list[list[float]], latent_dim: int, field: str, model: str,
                   vector: bool = False) -> torch.Tensor:
    """Rows of JSON numbers -> float32 (n, latent_dim); 422 naming `field` and the row and column
    at fault when a row is not latent_dim long or an entry does not fit a float32 (pydantic has
    refused NaN, Infinity and non-numbers already). `vector`: `values` is the one latent of a
    field that takes a single vector, and the messages say so.

    A float32 written as a Python float (JSON) and read back converts to the same float32, so
    latents sent back give the same pixels."""
    for i, row in enumerate(values):
        if len(row) != latent_dim:
            raise ApiError(
                422, "invalid_input",
                f"{field}: {'it' if vector else f'row {i}'} has {len(row)} numbers; model {model!r} takes "
                f"{latent_dim} (latent_dim in GET /models)", field,
            )
    z = torch.tensor(values, dtype=torch.float32)  # (n, latent_dim)
    bad = ~torch.isfinite(z)
    if bad.any():
        i, j = (int(v) for v in bad.nonzero()[0])
        place = f"entry {j}" if vector else f"row {i}, column {j}"
        raise ApiError(
            422, "invalid_input", f"{field}: {place}: {values[i][j]!r} is out of float32's range (about +-3.4e38)",
            field,
        )
    return z


def latents_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of float32 latents: their part of a response's ETag."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_pixels(settings: Settings, n: int, image_size: int, nrow: int, padding: int, scale: int,
                 count_field: str = "n") -> None:
    """422 when the grid would be over GAN_MAX_PIXELS, naming `scale` when it is above 1, else
    the route's image count (`n` for /generate, `steps` for /interpolate)."""
    height, width = grid_size(n, image_size, nrow, padding, scale)
    if height * width > settings.max_pixels:
        field = "scale" if scale > 1 else count_field
        raise ApiError(
            422, "invalid_input",
            f"{field}: the image would be {width}x{height} = {height * width} pixels, over the limit of "
            f"{settings.max_pixels} (GAN_MAX_PIXELS); lower {count_field} or scale",
            field,
        )


def etag_for(entry: ModelEntry, params: dict[str, Any]) -> str:
    """Weak ETag of a deterministic response: same weights, dtype and parameters, same image
    (up to floating-point differences between devices, hence weak)."""
    runner = entry.runner
    assert runner is not None
    key = {
        "model": entry.name,
        "weights": runner.config.get("weights_sha256", ""),
        "dtype": str(runner.dtype),
        "draw": DRAW_VERSION,  # a seed's latents: an earlier draw's cached image is stale
        **params,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def header_list(headers: Headers, name: str) -> str | None:
    """A list header (Accept, If-None-Match) as one comma list, however many lines the client
    split it over (RFC 9110 5.3: the same meaning); `headers.get` reads the first line only."""
    values = headers.getlist(name)
    if len(values) == 1:
        return values[0]
    return ", ".join(values) or None


def not_modified(if_none_match: str | None, etag: str | None) -> bool:
    """True when the client's If-None-Match header already names this ETag."""
    if etag is None or not if_none_match:
        return False
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def header_text(value: str) -> str:
    """A header value for a model or label name: as it is when printable ASCII, else its UTF-8
    percent-encoded (RFC 3986), which every client can decode. HTTP/1.1 headers carry Latin-1 at
    most, and a name such as "猫" would otherwise fail the whole response (500)."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


def image_response(body: bytes | None, fmt: str, headers: dict[str, str], etag: str | None,
                   private: bool = False) -> Response:
    """The answer in format `fmt` (None: 304 Not Modified). Every answer varies with Accept.

    A deterministic answer (`etag`) may be stored but is revalidated before each reuse (no-cache):
    its ETag changes when the weights do (POST /admin/reload), and a revalidation costs the
    service a 304 and no forward. `private`: the request needed an API key, so shared caches (a
    CDN, a proxy) must not keep the answer for others."""
    headers = {name: header_text(value) for name, value in headers.items()}
    scope = "private" if private else "public"
    if etag is not None:
        headers = {**headers, "ETag": etag, "Cache-Control": f"{scope}, no-cache", "Vary": "Accept"}
    else:
        headers = {**headers, "Cache-Control": "no-store", "Vary": "Accept"}
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)
