"""API keys and tokens: who may call what.

With GAN_API_KEYS set, the image routes and /models need `Authorization: Bearer <key>`; with
GAN_METRICS_TOKEN, /metrics needs that token; GAN_ADMIN_TOKEN guards POST /admin/reload
(service/routes/admin.py). Health, readiness, the page and the API documentation stay open.

Only SHA-256 digests of keys and tokens are kept. A key is found by its digest, so the time a
lookup takes depends on the digest of what was sent, never on how much of a real key it matches;
a token is compared digest to digest with hmac.compare_digest. A key is named only by its key id
(8 hex digits of its digest) in metrics and messages, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from service.errors import error_response
from service.settings import Settings

KEY_PATHS = frozenset({"/generate", "/interpolate", "/models"})  # need an API key when keys are set
METRICS_PATH = "/metrics"
NO_KEY, BAD_KEY = "none", "invalid"  # key ids of refusals without a known key (bounded labels)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer(headers: Headers) -> str | None:
    """The credentials of `Authorization: Bearer <credentials>`, or None."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def token_matches(headers: Headers, expected: bytes) -> bool:
    """True when the request's Bearer token has the SHA-256 `expected` (constant-time compare)."""
    sent = bearer(headers)
    return hmac.compare_digest(digest(sent or ""), expected) and sent is not None


def unauthorized(message: str, invalid: bool) -> JSONResponse:
    """401 in the service's error shape; WWW-Authenticate as RFC 6750 has it (`Bearer`, with
    error="invalid_token" when credentials were sent and are wrong)."""
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return error_response(401, "unauthorized", message, "authorization", headers={"WWW-Authenticate": challenge})


class Guard:
    """Checks the credentials of the routes that need some; the service's front calls it."""

    def __init__(self, keys: list[str], metrics_token: str | None = None):
        self._keys = frozenset(digest(k) for k in keys)
        self._metrics = digest(metrics_token) if metrics_token is not None else None
        self.paths = (KEY_PATHS if self._keys else frozenset()) | (
            {METRICS_PATH} if self._metrics is not None else frozenset())

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard | None:
        """A guard, or None when nothing is guarded (no keys, no metrics token): the front then
        does no check at all."""
        keys = settings.api_key_list()
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        return cls(keys, token) if keys or token else None

    def check(self, path: str, headers: Headers, scope_state: dict[str, Any], metrics: Any) -> JSONResponse | None:
        """None when the request may go on (its key's digest is then in scope_state["key_digest"]);
        else the 401 to send. Call only for a path in `paths`."""
        if path == METRICS_PATH:
            assert self._metrics is not None
            if token_matches(headers, self._metrics):
                return None
            tried = headers.get("authorization") is not None
            metrics.observe_key_refused(BAD_KEY if tried else NO_KEY, 401)
            return unauthorized(f"{METRICS_PATH} needs the metrics token: send the header "
                                "`Authorization: Bearer <token>` (the token is set by GAN_METRICS_TOKEN)", tried)
        sent = bearer(headers)
        if sent is None:
            tried = headers.get("authorization") is not None  # another scheme, or an empty one
            metrics.observe_key_refused(BAD_KEY if tried else NO_KEY, 401)
            how = "use the Bearer scheme" if tried else "this service needs an API key"
            return unauthorized(f"{how}: send the header `Authorization: Bearer <key>`", tried)
        found = digest(sent)
        if found not in self._keys:
            metrics.observe_key_refused(BAD_KEY, 401)
            return unauthorized("this API key is not valid; ask the service's operator for one "
                                "(the keys are set by GAN_API_KEYS)", True)
        scope_state["key_digest"] = found
        return None


def describe_security(app: FastAPI, guard: Guard | None) -> None:
    """Add the Bearer scheme to the OpenAPI schema for the guarded routes, so /docs sends the
    key ("Authorize") and clients see which routes need one and may answer 401 or 429."""
    if guard is None or not guard.paths:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "An API key (GAN_API_KEYS) or the metrics token"}
        for path, operations in schema.get("paths", {}).items():
            if path not in guard.paths:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", {"description": "Missing or invalid key (WWW-Authenticate: Bearer)",
                                             "content": {"application/json": {"schema": {
                                                 "$ref": "#/components/schemas/ErrorBody"}}}})
                if path != METRICS_PATH and path != "/models":
                    responses.setdefault("429", {"description": "Over the key's rate limit; see Retry-After",
                                                 "content": {"application/json": {"schema": {
                                                     "$ref": "#/components/schemas/ErrorBody"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
