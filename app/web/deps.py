"""FastAPI dependencies: the registry, scheduler and settings live on ``app.state`` (set in the lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..models.registry import ModelRegistry
from ..serving.scheduler import Scheduler
from ..settings import Settings


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
