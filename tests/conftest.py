"""Shared fixtures. The real minilm app is built once per session, with its lifespan running."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def wait_ready(client: TestClient, timeout: float = 120.0) -> None:
    """Poll /readyz until 200 (models load in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"/readyz not 200 after {timeout} s: {client.get('/readyz').json()}")


@pytest.fixture(scope="session")
def app() -> FastAPI:
    return create_app(Settings())


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    """minilm + custom, loaded once for the whole session."""
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def registry(client: TestClient, app: FastAPI):  # type: ignore[no-untyped-def]
    """The loaded ``ModelRegistry`` of the session app (for engine-level tests)."""
    return app.state.registry
