"""Shared fixtures. The real minilm app is built once per session, with its lifespan running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.settings import Settings


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


# -- tiny random models of each family (no downloads) ---------------------------------------------

#: App model name of each tiny family, as served by ``tiny_app``.
TINY_NAMES = {"bert": "tbert", "roberta": "troberta", "distilbert": "tdistilbert", "gpt2": "tgpt2"}


@pytest.fixture(scope="session")
def tiny_model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{family: folder}`` for bert, roberta, distilbert and gpt2, each a tiny random model + tokenizer."""
    from tests.tiny_models import make_all

    return make_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def broken_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like a model but whose config.json is not JSON."""
    folder = tmp_path_factory.mktemp("broken-model")
    (folder / "config.json").write_text("{ this is not json", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_app(tiny_model_paths: dict[str, Path], broken_model_path: Path, tmp_path_factory) -> FastAPI:  # type: ignore[no-untyped-def]
    """An app serving only the tiny models, plus two that cannot load (a missing and a broken folder)."""
    missing = tmp_path_factory.getbasetemp() / "no-such-model"
    models = ",".join(f"{TINY_NAMES[f]}={p}" for f, p in tiny_model_paths.items())
    models += f",missing={missing},broken={broken_model_path}"
    return create_app(Settings(builtin_models="", models=models, default_model="tbert"))


@pytest.fixture(scope="session")
def tiny_client(tiny_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(tiny_app) as c:
        wait_ready(c)
        yield c
