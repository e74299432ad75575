"""Every error a client can see, as JSON: {"error": code, "field": name or null, "message": text}.

Client mistakes are 4xx and name the field; overload is 503 (with Retry-After) or 504; only a
failure of the service itself is 500, and that body carries the request id to find it in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems: dict[str, list[str]] = {}  # field -> messages (a union gives one per member)
    for err in exc.errors():
        field = _field_of(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            field, msg = "body", f"malformed JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "model_attributes_type":
            field, msg = "body", "the body must be a JSON object"
        else:
            msg = err.get("msg", "invalid value")
        if msg not in problems.setdefault(field, []):
            problems[field].append(msg)
    listed = [{"field": f, "message": " or ".join(m)} for f, m in problems.items()]
    first = listed[0] if listed else {"field": "request", "message": "invalid request"}
    return error_response(
        422, "invalid_input", f"{first['field']}: {first['message']}", first["field"], problems=listed
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(request, exc)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body", e.g. bytes that are not UTF-8
            return error_response(422, "invalid_input", "body: malformed JSON (send a UTF-8 JSON object)", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return error_response(404, "unknown_model", str(exc), "model", valid=exc.valid)

    @app.exception_handler(ModelUnavailable)
    async def _unavailable(request: Request, exc: ModelUnavailable) -> JSONResponse:
        return error_response(503, "model_unavailable", str(exc), "model", headers={"Retry-After": "5"})

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        request.app.state.metrics.observe_rejection(exc.model, "queue_full")
        return error_response(
            503, "overloaded", f"{exc}; lower the request rate or n", headers={"Retry-After": str(exc.retry_after)}
        )

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        model = request.scope.get("state", {}).get("model", "unknown")
        request.app.state.metrics.observe_rejection(model, "deadline")
        return error_response(504, "timeout", f"request not served in time ({exc}); retry with a smaller n")

    @app.exception_handler(DeviceFailed)
    async def _device_failed(request: Request, exc: DeviceFailed) -> JSONResponse:
        return error_response(503, "model_unavailable", str(exc), "model", headers={"Retry-After": "5"})

    @app.exception_handler(BatchFailed)
    async def _batch_failed(request: Request, exc: BatchFailed) -> JSONResponse:
        return _internal(request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", _request_id(request), exc_info=exc)
        return _internal(request)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _internal(request: Request) -> JSONResponse:
    rid = _request_id(request)
    return error_response(
        500, "internal_error", f"the service failed on this request; the log has the details under id {rid}",
        request_id=rid,
    )
