"""Liveness (/healthz, always cheap) and readiness (/readyz, 200 once models are warm)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.deps import RegistryDep
from service.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "A device error: restart this process"}})
async def healthz(request: Request) -> JSONResponse:
    """Liveness: 200 unless a device error (CUDA) has made this process unfit to serve."""
    reason = request.app.state.unhealthy
    if reason is not None:
        return JSONResponse({"status": "unhealthy", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    models = {
        name: "loaded" if e.loaded else f"failed: {e.error}" for name, e in registry.entries.items()
    }
    broken = registry.broken()
    for name, error in broken.items():
        models[name] = f"failed: device error: {error}"
    if broken:
        status, code = "device error", 503
    elif not registry.ready:
        status, code = "loading", 503
    elif not registry.loaded_names():
        status, code = "no models loaded", 503
    else:
        status, code = "ready", 200
    return JSONResponse(Readiness(status=status, models=models).model_dump(), status_code=code)
