"""POST /admin/reload: rescan GAN_WEIGHTS_DIR and load, replace or remove models while serving.

Mounted only when GAN_ADMIN_TOKEN is set (without it the path is 404, as if absent), and answers
401 unless the request carries that token as `Authorization: Bearer <token>`. The registry does
the reload (service/registry.py); service/reload.py carries it to every worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.auth import BAD_KEY, NO_KEY, token_matches, unauthorized
from service.routes.common import error_responses

router = APIRouter(tags=["admin"])

RELOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every worker reloaded. `added`, `replaced`, `removed`, `unchanged` (model names) and "
                         "`failed` (`model`, `folder`, `error`; the old version keeps serving) are this worker's; "
                         "`workers` has each worker's, by process id, and `generation` the reload's number"},
    202: {"description": "As 200, but the workers in `pending` had not reloaded yet when the wait ended"},
    401: {"description": "Missing or wrong admin token (WWW-Authenticate: Bearer)"},
}


@router.post("/admin/reload", responses={**RELOAD_RESPONSES, **error_responses(500)})
async def reload_models(request: Request) -> JSONResponse:
    """Load new or changed model folders (config.json or weights SHA-256 differ) beside the running
    models, swap each in once warmed up, and drain the ones they replace and those whose folder
    is gone; requests already queued finish on the old weights. Needs the admin token."""
    state = request.app.state
    if not token_matches(request.headers, state.admin_digest):
        tried = request.headers.get("authorization") is not None
        state.metrics.observe_key_refused(BAD_KEY if tried else NO_KEY, 401)
        return unauthorized("POST /admin/reload needs the admin token: send the header "
                            "`Authorization: Bearer <token>` (the token is set by GAN_ADMIN_TOKEN)", tried)
    await asyncio.shield(state.loading)  # the start-up load first: a reload rescans what it found
    answer, complete = await state.reloader.reload_everywhere()
    return JSONResponse(answer, status_code=200 if complete else 202)
