"""Liveness (/healthz, always cheap) and readiness (/readyz, 200 once models are warm)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import RegistryDep
from service.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    models = {
        name: "loaded" if e.loaded else f"failed: {e.error}" for name, e in registry.entries.items()
    }
    if not registry.ready:
        status, code = "loading", 503
    elif not registry.loaded_names():
        status, code = "no models loaded", 503
    else:
        status, code = "ready", 200
    return JSONResponse(Readiness(status=status, models=models).model_dump(), status_code=code)
