"""What /generate and /interpolate share: limits, labels, seeds, ETags and the PNG response."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Response
from starlette.types import Receive

from gancore.labels import UnknownLabel, resolve_label
from service.errors import ApiError, ClientGone
from service.registry import ModelEntry
from service.rendering import grid_size
from service.schemas import ErrorBody
from service.settings import Settings

T = TypeVar("T")

RANDOM_SEED_BOUND = 2**31  # random seeds stay short enough to read and type back

_ERROR_STATUS = {
    404: "Unknown model",
    413: "Request body over GAN_MAX_BODY_BYTES",
    415: "Body not sent as application/json; send the header Content-Type: application/json",
    422: "Invalid input; `field` names it",
    500: "Failure of the service; the log has the details under `request_id`",
    503: "Model unavailable or queue full; see Retry-After",
    504: "Not served within GAN_REQUEST_TIMEOUT_S",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer, all with the ErrorBody
    schema (this also replaces FastAPI's default 422 schema, which is not what we send)."""
    return {s: {"model": ErrorBody, "description": _ERROR_STATUS[s]} for s in statuses}


async def unless_client_leaves(work: Awaitable[T], receive: Receive | None) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise ClientGone.

    Cancelling a batcher submission cancels its queued rows, which the batcher then drops before
    their forward: a client that hangs up takes its work with it. The watcher is one small task
    whose completion cancels this one (cheaper than asyncio.wait over both); refusals never get
    here.
    """
    if receive is None:
        return await work
    current = asyncio.current_task()
    assert current is not None
    watcher = asyncio.ensure_future(_disconnect(receive))
    watcher.add_done_callback(lambda w: None if w.cancelled() else current.cancel())
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientGone() from None
        raise
    finally:
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
        raise ApiError(422, "unknown_label", f"{field}: {exc}", field, valid=list(exc.valid)) from None


def check_pixels(settings: Settings, n: int, image_size: int, nrow: int, padding: int, scale: int) -> None:
    height, width = grid_size(n, image_size, nrow, padding, scale)
    if height * width > settings.max_pixels:
        field = "scale" if scale > 1 else "n"
        raise ApiError(
            422, "invalid_input",
            f"{field}: the image would be {width}x{height} = {height * width} pixels, over the limit of "
            f"{settings.max_pixels} (GAN_MAX_PIXELS); lower n or scale",
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
        **params,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def not_modified(if_none_match: str | None, etag: str | None) -> bool:
    """True when the client's If-None-Match header already names this ETag."""
    if etag is None or not if_none_match:
        return False
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def png_response(png: bytes | None, headers: dict[str, str], etag: str | None) -> Response:
    if etag is not None:
        headers = {**headers, "ETag": etag, "Cache-Control": "public, max-age=86400"}
    else:
        headers = {**headers, "Cache-Control": "no-store"}
    if png is None:
        return Response(status_code=304, headers=headers)
    return Response(png, media_type="image/png", headers=headers)
