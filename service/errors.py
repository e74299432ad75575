"""Every error a client can see, as JSON: {"error": code, "field": name or null, "message": text}.

Client mistakes are 4xx and name the field; overload is 503 (with Retry-After) or 504; only a
failure of the service itself is 500, and that body carries the request id to find it in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.batcher import BatchFailed, DeadlineExceeded, DeviceFailed, QueueFull
from service.registry import ModelUnavailable, UnknownModel

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error response raised from a route."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra


class ClientGone(Exception):
    """The client closed its connection before its answer was ready; nothing reaches it."""


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": code, "field": field, "message": message, **extra}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field, **extra), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'n') -> 'n'; ('body', 'label', 'str') -> 'label' (a union member);
    ('query', 'steps') -> 'steps'; ('body',) or ('body', 12) -> 'body'."""
    if len(loc) > 1 and isinstance(loc[1], str):
        return loc[1]
    return str(loc[0]) if loc else "request"


def _place_of(loc: tuple[Any, ...] | list[Any]) -> str:
    """Where inside a list field the error is: ('body', 'latents', 3, 5) -> 'row 3, column 5: ',
    ('body', 'latent_from', 5) -> 'entry 5: '; '' for a field that is not a list."""
    index = [p for p in loc[2:] if isinstance(p, int)]
    if len(index) == 1:
        return f"entry {index[0]}: "
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}: "
    return ""


PROBLEMS_PER_FIELD = 5  # a body of 32,768 bad latent entries gets the first few, not 32,768 messages


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    """422 for pydantic errors whose `loc` starts with where the value came from ('body', 'query')."""
    problems: dict[str, list[str]] = {}  # field -> messages (a union gives one per member)
    for err in errors:
        loc = err.get("loc", ())
        field = _field_of(loc)
        if err.get("type") == "json_invalid":
            field, msg = "body", f"malformed JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") in ("model_attributes_type", "model_type"):
            field, msg = "body", "the body must be a JSON object"
        else:
            msg = _place_of(loc) + err.get("msg", "invalid value")
        known = problems.setdefault(field, [])
        if msg not in known and len(known) < PROBLEMS_PER_FIELD:
            known.append(msg)
    listed = [{"field": f, "message": " or ".join(m)} for f, m in problems.items()]
    first = listed[0] if listed else {"field": "request", "message": "invalid request"}
    return error_response(
        422, "invalid_input", f"{first['field']}: {first['message']}", first["field"], problems=listed
    )


def response_for(exc: Exception, request_id: str, model: str | None, metrics: Any) -> JSONResponse:
    """The JSON error for an exception raised while serving a request: one mapping for the
    FastAPI routes and for the fast /generate path (service/middleware.py)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, **exc.extra)
    if isinstance(exc, ClientGone):  # a FastAPI route's client left: the answer goes nowhere
        metrics.observe_cancelled(model or "unknown")
        return error_response(499, "client_closed_request", "the client closed the connection")
    if isinstance(exc, RequestValidationError):
        return validation_response(exc.errors())
    if isinstance(exc, UnknownModel):
        return error_response(404, "unknown_model", str(exc), "model", valid=exc.valid, suggestion=exc.suggestion)
    if isinstance(exc, (ModelUnavailable, DeviceFailed)):
        return error_response(503, "model_unavailable", str(exc), "model", headers={"Retry-After": "5"})
    if isinstance(exc, QueueFull):
        metrics.observe_rejection(exc.model, exc.metric_reason)
        return error_response(
            503, "overloaded", f"{exc}; lower the request rate or n", headers={"Retry-After": str(exc.retry_after)}
        )
    if isinstance(exc, DeadlineExceeded):
        metrics.observe_rejection(model or "unknown", "deadline")
        return error_response(504, "timeout", f"request not served in time ({exc}); retry with a smaller n")
    if not isinstance(exc, BatchFailed):
        log.error("request %s failed", request_id, exc_info=exc)
    return error_response(
        500, "internal_error", f"the service failed on this request; the log has the details under id {request_id}",
        request_id=request_id,
    )


def _method_hint(request: Request) -> str:
    if request.url.path == "/generate":
        return ("; use GET /generate?label=sneaker&n=16, or POST /generate with a JSON body and the header "
                'Content-Type: application/json, e.g. curl -X POST localhost:8000/generate '
                '-H "content-type: application/json" -d \'{"label": "sneaker", "n": 16}\'')
    if request.url.path == "/interpolate":
        return "; use GET /interpolate?label=...&label_to=...&steps=8, or POST /interpolate with a JSON body"
    return ""


def _allowed(request: Request) -> str:
    """The Allow header of a 405: the methods of every route on the request's path, and HEAD
    wherever GET is (the front answers HEAD for every GET route, service/middleware.py)."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "routes", ()):  # set when the middleware stack is built
        if route.matches(request.scope)[0] != Match.NONE:
            methods.update(route.methods or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body", e.g. bytes that are not UTF-8
            return error_response(422, "invalid_input", "body: malformed JSON (send a UTF-8 JSON object)", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail) + (_method_hint(request) if exc.status_code == 405 else "")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # the router names the methods of the first route on the path only
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        state = request.scope.get("state", {})
        return response_for(exc, _request_id(request), state.get("model"), request.app.state.metrics)

    for kind in (RequestValidationError, ApiError, ClientGone, UnknownModel, ModelUnavailable, QueueFull,
                 DeadlineExceeded,
                 DeviceFailed, BatchFailed):
        app.add_exception_handler(kind, _any)  # type: ignore[arg-type]


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))
