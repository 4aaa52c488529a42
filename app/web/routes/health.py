"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...schemas.attention import Health, Readiness
from ..deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always 200 while the event loop runs; says nothing about models."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Models still loading."}},
    summary="Readiness: models loaded and warmed up",
)
async def readyz(registry: RegistryDep) -> JSONResponse:
    """200 once loading finished and at least one model serves (failures listed), 503 before."""
    ready = registry.ready and bool(registry.engines)
    body = Readiness(ready=ready, models=list(registry.engines), failed=registry.failed)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
