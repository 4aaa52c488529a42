"""schemathesis against the app's own OpenAPI schema, with every check, in-process over ASGI.

Every built-in check runs (``max_response_time`` too, with a generous limit). One is tuned:
``positive_data_acceptance`` also accepts 413 and 422 for schema-valid requests, because the API
documents errors the schema cannot express: whitespace-only text (422 ``empty_text``), a layer or head
index past the chosen model's count (422), more tokens than the model takes (413 ``too_many_tokens``).
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from headmap.main import create_app
from headmap.settings import Settings

CONFIG = {
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "413", "422", "429"]},
        "max_response_time": 20.0,
    },
}


@pytest.fixture(scope="module")
def api_schema():  # type: ignore[no-untyped-def]
    """The schema of a fresh app; schemathesis runs its lifespan once, and we wait for the models."""
    app = create_app(Settings())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_dict(CONFIG))
    client = schemathesis.python.asgi.get_client(app)
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "models not loaded in 120 s"
        time.sleep(0.1)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate()
