"""The insight API: head statistics, aggregates over heads, compare A − B, and the step-by-step explainer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...errors import APIError
from ...models.registry import ModelRegistry
from ...schemas.attention import AttentionRequest
from ...schemas.insight import (
    AggregateRequest,
    AggregateResponse,
    CompareRequest,
    CompareResponse,
    ExplainRequest,
    ExplainResponse,
    StatsRequest,
    StatsResponse,
)
from ...serving import attention as service
from ...serving import insight as insight_service
from ...serving import measures as measures_service
from ...serving.attention import AttentionResult
from ...serving.encoding import dumps
from ...serving.memory import Hold, python_values_bytes
from ...serving.scheduler import Scheduler
from ...serving.threads import in_torch_thread
from ..deps import HoldDep, RegistryDep, SchedulerDep, SettingsDep
from ..errors import error_responses
from ..i18n import LangDep
from ..responses import timed_json

router = APIRouter(prefix="/api", tags=["insight"])


async def _respond(start: float, build: Callable[..., dict[str, Any]], *args: Any) -> Response:
    """Build and serialise the payload in a worker thread (a compare of long texts is tens of MB)."""
    return timed_json(await in_torch_thread(lambda: dumps(build(*args))), start)


@router.post(
    "/stats",
    response_model=StatsResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Statistics of every layer × head: entropy, distance, max weight, shares to [CLS]/[SEP]/self/neighbours",
)
async def stats(
    req: StatsRequest, registry: RegistryDep, scheduler: SchedulerDep, settings: SettingsDep, hold: HoldDep
) -> Response:
    """Each statistic as a `[layer][head]` matrix; the definitions are in the response schema.

    With `similarity: true`, also the Jensen–Shannon distances between the heads and a 2-D MDS map of them."""
    start = time.perf_counter()
    result = await service.compute(registry, scheduler, req, hold)
    if req.similarity:
        measures_service.check_length("similarity", len(result.enc), settings.similarity_max_tokens)
    return await _respond(start, insight_service.stats_payload, result, req.similarity)


@router.post(
    "/aggregate",
    response_model=AggregateResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Mean and max over heads, attention rollout and flow, and ALTI contributions, per layer",
)
async def aggregate(
    req: AggregateRequest, registry: RegistryDep, scheduler: SchedulerDep, settings: SettingsDep, hold: HoldDep
) -> Response:
    """T×T matrices per layer combining the requested `heads`; each formula is in the response schema."""
    start = time.perf_counter()
    if "alti" in req.methods or "alti_rollout" in req.methods:
        engine, _, _ = service.prepare(registry, req)  # empty text, unknown model, ranges: before the 422 below
        measures_service.require_internals(engine, "alti")
    result = await service.compute(registry, scheduler, req, hold)
    if "flow" in req.methods:
        measures_service.check_length("flow", len(result.enc), settings.flow_max_tokens)
    if "alti" in req.methods or "alti_rollout" in req.methods:
        measures_service.check_length("alti", len(result.enc), settings.alti_max_tokens)
    if {"flow", "alti", "alti_rollout"} & set(req.methods):  # model work or seconds of max-flow: admitted like it
        alti = "alti" in req.methods or "alti_rollout" in req.methods
        nbytes = measures_service.alti_bytes(result.engine, len(result.enc)) if alti else 0  # flow: a small graph
        body = await scheduler.call(lambda: dumps(insight_service.aggregate_payload(result, req.methods)), nbytes, hold)
        return timed_json(body, start)
    return await _respond(start, insight_service.aggregate_payload, result, req.methods)


@contextmanager
def _side(name: str) -> Iterator[None]:
    """Errors raised inside name the side they are about ("b: layer 3 is out of range ...")."""
    try:
        yield
    except APIError as exc:
        message = ("error.side", {"side": name, "detail": exc.message}) if exc.message else None
        raise APIError(exc.status, exc.error, f"{name}: {exc.detail}", exc.headers, message) from None


async def _compute_side(
    name: str, registry: ModelRegistry, scheduler: Scheduler, req: AttentionRequest, hold: Hold
) -> AttentionResult:
    with _side(name):
        return await service.compute(registry, scheduler, req, hold)


@router.post(
    "/compare",
    response_model=CompareResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Attention of two inputs side by side, and A − B when their tokens line up",
)
async def compare(req: CompareRequest, registry: RegistryDep, scheduler: SchedulerDep, hold: HoldDep) -> Response:
    """Two texts, or one text through two models sharing a tokenizer. Tokens that do not line up give 200 with
    `aligned: false`, a plain `reason` and `diff: null` (both sides are still returned, to show side by side)."""
    start = time.perf_counter()
    with _side("a"):
        engine_a = registry.get(req.a.model)
    with _side("b"):
        engine_b = registry.get(req.b.model)
    # By default only what both models have, so the two sides have the same shape.
    layers = req.layers if req.layers is not None else list(range(min(engine_a.num_layers, engine_b.num_layers)))
    heads = req.heads if req.heads is not None else list(range(min(engine_a.num_heads, engine_b.num_heads)))
    sides = [
        AttentionRequest(
            text=side.text,
            text_pair=side.text_pair,
            model=side.model,
            layers=layers,
            heads=heads,
            truncate=req.truncate,
            encoding="json",
        )
        for side in (req.a, req.b)
    ]
    # Both sides go through the batcher together: on one model they can share a forward pass.
    results = await asyncio.gather(
        _compute_side("a", registry, scheduler, sides[0], hold),
        _compute_side("b", registry, scheduler, sides[1], hold),
        return_exceptions=True,  # wait for both, so a failing side leaves no orphaned task behind
    )
    result_a, result_b = results
    if isinstance(result_a, BaseException):
        raise result_a
    if isinstance(result_b, BaseException):
        raise result_b
    return await _respond(start, insight_service.compare_payload, result_a, result_b, req.view)


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="The custom block's forward pass step by step for one head, with real numbers",
)
async def explain(
    req: ExplainRequest, registry: RegistryDep, scheduler: SchedulerDep, lang: LangDep, hold: HoldDep
) -> Response:
    """Embeddings, Q/K/V, scores, softmax weights, weighted sum, residual + LayerNorm, Linear output (kind custom).

    Titles and explanations follow `?lang=` or `Accept-Language` (`en`, `zh-CN`); formulas and keys do not."""
    start = time.perf_counter()
    one = AttentionRequest(
        text=req.text,
        text_pair=req.text_pair,
        model=req.model,
        layers=None,
        heads=[req.head],
        truncate=req.truncate,
        encoding="json",
    )
    engine, _, _ = service.prepare(registry, one)  # empty text, unknown model, head out of range
    insight_service.require_custom(engine)  # before tokenizing
    enc = await run_in_threadpool(service.encode, engine, one)
    # One layer on one unpadded input: nothing to batch, but it is model work like any other, so it takes
    # its turn under the scheduler's admission control (503), concurrency bound and time limit (504).
    t, hidden = len(enc), engine.num_heads * engine.head_dim
    nbytes = python_values_bytes(2 * t * t + 12 * t * hidden)  # T×T scores and weights, ~12 T×D steps, as lists
    payload = await scheduler.call(lambda: insight_service.explain_payload(engine, enc, req.head, lang), nbytes, hold)
    return timed_json(await run_in_threadpool(dumps, payload), start)
