"""Assemble the FastAPI app: lifespan, middleware, routers, static files. Nothing else lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__
from .models.registry import ModelRegistry
from .paths import STATIC_DIR
from .serving.scheduler import Scheduler
from .serving.threads import configure_threads, in_torch_thread
from .settings import Settings, get_settings
from .web.compression import GzipMiddleware
from .web.errors import install_error_handlers
from .web.middleware import install_middleware
from .web.routes import (
    api,
    corpus,
    health,
    insight,
    measures,
    pages,
    runs,
)
from .web.static_files import CachedStaticFiles

log = logging.getLogger("headmap")

DESCRIPTION = """Per-layer, per-head self-attention weights of transformer models, as JSON.

Errors are always `{"error": "<code>", "detail": "<message>"}` with a 4xx (or 503/504) status."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Models load in the lifespan, in a worker thread; `/readyz` turns 200 when done."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_threads(settings.threads)
        registry = ModelRegistry(settings)
        app.state.settings = settings
        app.state.registry = registry
        scheduler = app.state.scheduler = Scheduler(settings)

        async def load() -> None:
            try:
                await in_torch_thread(registry.load_all)  # warm-up on the torch thread too: one OpenMP team
            finally:
                scheduler.size_memory()  # the byte pool: the budget's share less what the models hold

        loading: asyncio.Task[None] | None = None
        if settings.load_in_background:
            loading = asyncio.create_task(load())
        else:
            await load()
        try:
            yield
        finally:
            await app.state.scheduler.close()
            corpus_jobs = getattr(app.state, "corpus_jobs", None)  # created by the first POST /api/corpus
            if corpus_jobs is not None:
                corpus_jobs.cancel_all()  # a running job stops at its next shard
            if loading is not None and not loading.done():
                await asyncio.gather(loading, return_exceptions=True)

    app = FastAPI(
        title="Headmap",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by pages.docs with local assets
        redoc_url=None,
    )
    install_error_handlers(app)
    install_middleware(app, settings)
    app.add_middleware(
        GzipMiddleware, level=settings.gzip_level, maximum=settings.gzip_max_bytes, loopback=settings.gzip_loopback
    )
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(insight.router)
    app.include_router(measures.router)
    app.include_router(corpus.router)
    app.include_router(runs.router)
    app.include_router(pages.router)
    app.mount("/static", CachedStaticFiles(directory=STATIC_DIR), name="static")
    return app
