"""Runs: a long input run once and kept, read as pooled overviews, exact tiles and single rows or columns
(issue 13; RUNS_API.md)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...schemas.attention import AttentionRequest
from ...schemas.runs import VECTOR_DECIMALS, Overview, RunInfo, RunRequest, Tile, Vector
from ...serving import runs as service
from ...serving.encoding import CompactWeights, Weights, dumps
from ..deps import HoldDep, RegistryDep, SchedulerDep, SettingsDep
from ..errors import error_responses
from ..responses import timed_json

router = APIRouter(prefix="/api/runs", tags=["runs"])

RunId = Annotated[str, Path(max_length=200, description="The `run_id` that `POST /api/runs` gave.")]
LayerQ = Annotated[int, Query(ge=0, description="Layer (0-based).")]
HeadQ = Annotated[
    Annotated[int, Query(ge=0)] | Literal["mean", "max"],
    Query(description="Query head (0-based), or `mean` / `max` over the layer's query heads."),
]
IfNoneMatch = Annotated[
    str | None, Header(description="An `ETag` this client holds: 304 if it still names the answer.")
]


def run_store(request: Request) -> service.RunStore:
    """The app's run store, created on first use (one per server process)."""
    store: service.RunStore | None = getattr(request.app.state, "runs", None)
    if store is None:
        store = request.app.state.runs = service.RunStore.from_settings(request.app.state.settings)
    return store


def _cached(response: Response, store: service.RunStore, run: service.Run, tag: str) -> Response:
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = f"private, max-age={store.seconds_left(run)}, immutable"
    return response


def _not_modified(store: service.RunStore, run: service.Run, tag: str, if_none_match: str | None) -> Response | None:
    if not service.matches(if_none_match, tag):
        return None
    return _cached(Response(status_code=304), store, run, tag)


_READ_ERRORS = error_responses(404, 413, 422, 503, 504)
_READ_ERRORS[304] = {"description": "Not modified: the `If-None-Match` ETag still names this answer."}


@router.post(
    "",
    response_model=RunInfo,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Run a (long) text once and keep it, to read as overviews and tiles",
)
async def create(
    req: RunRequest,
    request: Request,
    registry: RegistryDep,
    scheduler: SchedulerDep,
    settings: SettingsDep,
    hold: HoldDep,
) -> Response:
    """Tokenize and run the text; the server keeps the run (queries and keys for models on the attention capture)
    until `expires_at` or until it needs the room (least recently used first). Read it with `GET .../overview` and
    `GET .../tile`. Takes up to `HEADMAP_RUN_MAX_TOKENS` tokens, capped by the model's own limit."""
    start = time.perf_counter()
    attention_req = AttentionRequest(text=req.text, model=req.model, text_pair=req.text_pair, truncate=req.truncate)
    run, enc, engine = await service.create(registry, scheduler, run_store(request), settings, attention_req, hold)
    body = await run_in_threadpool(lambda: dumps(service.info(run, enc, engine)))
    response = timed_json(body, start)
    response.headers["Location"] = f"/api/runs/{run.run_id}"
    return response


@router.get(
    "/{run_id}/overview",
    response_model=Overview,
    responses=_READ_ERRORS,
    summary="One layer and head of a run pooled into size x size blocks (max or mean of each block)",
)
async def overview(
    run_id: RunId,
    layer: LayerQ,
    head: HeadQ,
    request: Request,
    scheduler: SchedulerDep,
    hold: HoldDep,
    size: Annotated[int, Query(ge=1, le=service.MAX_OVERVIEW, description="Cells a side (at most the tokens).")] = 256,
    reduce: Annotated[Literal["max", "mean"], Query(description="How a block's weights become one cell.")] = "max",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Computed a block of query rows at a time (each row's exact softmax over all keys), never the whole T x T."""
    start = time.perf_counter()
    store = run_store(request)
    run = store.get(run_id)
    service.check_layer_head(run, layer, head)
    tag = service.etag(run, {"view": "overview", "layer": layer, "head": head, "size": size, "reduce": reduce})
    if (hit := _not_modified(store, run, tag, if_none_match)) is not None:
        return hit
    nbytes = service.read_bytes(run, max(1, service.CHUNK_FLOATS // run.num_tokens))  # one chunk of rows
    q_bounds, k_bounds, matrix = await scheduler.call(
        lambda: service.overview(run, layer, head, size, reduce), nbytes, hold
    )
    payload: dict[str, Any] = {
        "run_id": run.run_id,
        "layer": layer,
        "head": head,
        "reduce": reduce,
        "num_tokens": run.num_tokens,
        "size": len(q_bounds) - 1,
        "q_bounds": q_bounds.tolist(),
        "k_bounds": k_bounds.tolist(),
        "matrix": Weights(matrix),  # [n, n]
    }
    return _cached(timed_json(await run_in_threadpool(dumps, payload), start), store, run, tag)


@router.get(
    "/{run_id}/tile",
    response_model=Tile,
    responses=_READ_ERRORS,
    summary="The exact weights of a range of queries x keys (at most 512 a side)",
)
async def tile(
    run_id: RunId,
    layer: LayerQ,
    head: HeadQ,
    q0: Annotated[int, Query(ge=0, description="First query (inclusive).")],
    q1: Annotated[int, Query(ge=1, description="Last query (exclusive).")],
    k0: Annotated[int, Query(ge=0, description="First key (inclusive).")],
    k1: Annotated[int, Query(ge=1, description="Last key (exclusive).")],
    request: Request,
    scheduler: SchedulerDep,
    hold: HoldDep,
    encoding: Annotated[Literal["json", "compact"], Query(description="`json` floats or `compact` uint8.")] = "json",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Each weight is its query row's softmax over all keys (a tile's rows are not renormalised)."""
    start = time.perf_counter()
    store = run_store(request)
    run = store.get(run_id)
    service.check_layer_head(run, layer, head)
    service.check_tile(run, q0, q1, k0, k1)
    query = {"view": "tile", "layer": layer, "head": head, "q0": q0, "q1": q1, "k0": k0, "k1": k1, "enc": encoding}
    tag = service.etag(run, query)
    if (hit := _not_modified(store, run, tag, if_none_match)) is not None:
        return hit
    nbytes = service.read_bytes(run, q1 - q0)
    weights = await scheduler.call(lambda: service.tile(run, layer, head, q0, q1, k0, k1), nbytes, hold)  # [q, k]
    payload = {
        "run_id": run.run_id,
        "layer": layer,
        "head": head,
        "q0": q0,
        "q1": q1,
        "k0": k0,
        "k1": k1,
        "weights": Weights(weights) if encoding == "json" else None,
        "weights_compact": CompactWeights(weights) if encoding == "compact" else None,
    }
    return _cached(timed_json(await run_in_threadpool(dumps, payload), start), store, run, tag)


@router.get(
    "/{run_id}/vector",
    response_model=Vector,
    responses=_READ_ERRORS,
    summary="One query's weights over every key (a row) or every query's weight on one key (a column)",
)
async def vector(
    run_id: RunId,
    layer: LayerQ,
    head: HeadQ,
    index: Annotated[int, Query(ge=0, description="The query (axis `query`) or key (axis `key`), 0-based.")],
    request: Request,
    scheduler: SchedulerDep,
    hold: HoldDep,
    axis: Annotated[
        Literal["query", "key"], Query(description="`query`: query `index`'s row; `key`: key `index`'s column.")
    ] = "query",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """What the text view of a long input shades: the weights from one token (a row: one softmax per head) or to
    one token (a column: every query row's exact softmax over all keys, computed a chunk of rows at a time, never
    the whole T x T). `bad_range` when `index` is not a token of the run."""
    start = time.perf_counter()
    store = run_store(request)
    run = store.get(run_id)
    service.check_layer_head(run, layer, head)
    service.check_index(run, index)
    tag = service.etag(run, {"view": "vector", "layer": layer, "head": head, "index": index, "axis": axis})
    if (hit := _not_modified(store, run, tag, if_none_match)) is not None:
        return hit
    nbytes = service.read_bytes(run, service.vector_rows(run, axis))
    weights = await scheduler.call(lambda: service.vector(run, layer, head, index, axis), nbytes, hold)  # [T]
    payload = {
        "run_id": run.run_id,
        "layer": layer,
        "head": head,
        "index": index,
        "axis": axis,
        "num_tokens": run.num_tokens,
        "weights": weights.double().round(decimals=VECTOR_DECIMALS).numpy(),
    }
    return _cached(timed_json(await run_in_threadpool(dumps, payload), start), store, run, tag)


@router.delete(
    "/{run_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 422),
    summary="Drop a run now (its memory goes back to the cache)",
)
async def delete(run_id: RunId, request: Request) -> Response:
    run_store(request).delete(run_id)
    return Response(status_code=204)
