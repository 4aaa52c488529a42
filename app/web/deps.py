"""FastAPI dependencies: the registry, scheduler and settings live on ``app.state`` (set in the lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from ..models.registry import ModelRegistry
from ..serving.memory import Hold
from ..serving.scheduler import Scheduler
from ..settings import Settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def scheduler_of(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool, a round trip
# through a worker thread per dependency per request for what is an attribute read.
async def get_scheduler(request: Request) -> Scheduler:
    return scheduler_of(request)


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def request_hold(request: Request) -> AsyncIterator[Hold]:
    """The request's hold on the scheduler's byte pool, released after the response has been sent (FastAPI
    runs a yield dependency's exit then, streamed bodies included) or when the request fails or is cancelled."""
    hold = scheduler_of(request).hold()
    try:
        yield hold
    finally:
        hold.release()


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
HoldDep = Annotated[Hold, Depends(request_hold)]
