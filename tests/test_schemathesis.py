"""schemathesis against the app's own OpenAPI schema, with every check: in-process over ASGI, and over HTTP
against a real ``headmap serve`` on 127.0.0.1.

The schema declares every rule that does not depend on the model (non-blank text, non-empty index lists,
...), so the built-in ``positive_data_acceptance`` is replaced by a stricter one: a schema-valid request
must be accepted unless it hits one of the documented model-dependent limits in ``MODEL_DEPENDENT``, each
recognised by its own status and error code — no blanket 4xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from headmap.main import create_app
from headmap.settings import Settings
from tests.harness import headmap_serve

#: The only refusals of a schema-valid request, (status, error code): limits that depend on the model it names
#: or on the server's state.
MODEL_DEPENDENT = {
    (404, "model_not_found"),  # a model name this server does not serve
    (413, "too_many_tokens"),  # more tokens than this model takes
    (422, "layer_out_of_range"),  # an index outside 0..count-1 of this model (the count is the model's)
    (422, "head_out_of_range"),
    (422, "pair_unsupported"),  # `text_pair` for a model that takes one segment
    (422, "target_unsupported"),  # `target` for a model that is not an encoder–decoder
    (422, "not_custom"),  # /api/explain with a model of another kind
    (422, "measure_unsupported"),  # norms / ALTI for a model whose internals are not read (the custom block)
    (422, "random_length_out_of_range"),  # /api/heads: twice the random sequence is over this model's limit
    (413, "too_many_tokens_for_flow"),  # the measures' length bounds (settings), below the model's own limit
    (413, "too_many_tokens_for_alti"),
    (413, "too_many_tokens_for_similarity"),
    # predictions and generation: what the named model has (an LM head, a decoder) and the server's bounds
    (422, "predictions_unsupported"),  # a model without a masked-LM or causal-LM head (minilm)
    (422, "generate_unsupported"),  # generation on an encoder, or with a text_pair
    (422, "too_many_new_tokens"),  # more than HEADMAP_GENERATE_MAX_NEW_TOKENS, a server setting
    (413, "too_many_tokens_for_predictions"),  # tokens × vocabulary over HEADMAP_PREDICT_MAX_LOGITS
    # corpus jobs: what depends on the server's state, or on a file body the schema cannot look into
    (404, "job_not_found"),  # a job id this server does not hold (like an unknown model name)
    (429, "corpus_busy"),  # one corpus job at a time: the generated requests race each other
    (422, "empty_corpus"),  # every text blank (a list of blanks, or an uploaded file of empty lines)
    (422, "invalid_max_tokens"),  # a corpus max_tokens over this model's own limit
    (413, "too_many_texts"),  # more texts than HEADMAP_CORPUS_MAX_TEXTS, a server setting
    (409, "job_cancelled"),  # the job was stopped (server shutting down)
    (422, "invalid_corpus"),  # an uploaded file whose lines are not the format named (its content has no schema)
    # runs: what depends on the run (its id, its tokens, layers and heads) or on the run cache's size
    (404, "run_not_found"),  # a run id this server does not hold (never made, expired, evicted, deleted)
    (422, "bad_layer"),  # a layer / head outside this run's model
    (422, "bad_head"),
    (422, "bad_range"),  # a tile outside this run's tokens, or q0 >= q1 (a relation the schema cannot state)
    (413, "tile_too_large"),  # q1 - q0 or k1 - k0 over 512 (a difference the schema cannot state)
    (413, "run_too_large"),  # a run larger than HEADMAP_RUN_CACHE_MB, a server setting
}


@schemathesis.check
def schema_valid_is_accepted(ctx, response, case) -> bool | None:  # type: ignore[no-untyped-def]
    """A positively generated request gets 2xx, or one of ``MODEL_DEPENDENT`` (status and code both)."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return None
    error = response.json().get("error") if response.status_code < 500 else None
    assert (response.status_code, error) in MODEL_DEPENDENT, (
        f"schema-valid request rejected: {response.status_code} {response.text[:300]}"
    )
    return None


def run_case(case, **kwargs) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        excluded_checks=[positive_data_acceptance], additional_checks=[schema_valid_is_accepted], **kwargs
    )


@pytest.fixture(scope="module")
def api_schema():  # type: ignore[no-untyped-def]
    """The schema of a fresh app; schemathesis runs its lifespan once, and we wait for the models."""
    app = create_app(Settings())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig())
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
    run_case(case)


@pytest.fixture(scope="module")
def served_schema() -> Iterator[object]:
    """The schema as a real ``headmap serve`` on 127.0.0.1 publishes it; requests go over HTTP."""
    with headmap_serve() as srv:
        yield schemathesis.openapi.from_url(f"{srv.url}/openapi.json", config=SchemathesisConfig())


served = schemathesis.pytest.from_fixture("served_schema")


@pytest.mark.slow
@served.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_served_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    run_case(case, timeout=60)
