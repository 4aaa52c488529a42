"""The corpus API: submit a small corpus, follow its progress as server-sent events, read its summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...corpus import jobs as corpus_jobs
from ...corpus.compute import Options
from ...corpus.reader import CorpusInputError, Text, parse
from ...errors import APIError
from ...models.engine import Engine
from ...schemas.corpus import CorpusJob, CorpusOptions, CorpusRequest, CorpusSummary
from ..deps import RegistryDep, SettingsDep
from ..errors import error_responses

router = APIRouter(prefix="/api/corpus", tags=["corpus"])

_SHARD = 32  # texts per shard of an API job: progress events come at least this often


def job_manager(request: Request) -> corpus_jobs.JobManager:
    """The app's job manager, created on first use (one per server process)."""
    manager: corpus_jobs.JobManager | None = getattr(request.app.state, "corpus_jobs", None)
    if manager is None:
        manager = request.app.state.corpus_jobs = corpus_jobs.JobManager(request.app.state.settings.corpus_jobs_kept)
    return manager


def _accepted(job: corpus_jobs.Job) -> JSONResponse:
    return JSONResponse(job.progress(), status_code=202, headers={"Location": f"/api/corpus/{job.id}"})


async def _submit(
    request: Request, engine: Engine, texts: list[Text], options: CorpusOptions, batch_tokens: int, limit: int
) -> JSONResponse:
    if not texts:
        raise APIError(422, "empty_corpus", "The corpus has no non-blank text.")
    if len(texts) > limit:
        raise APIError(413, "too_many_texts", f"The corpus has {len(texts)} texts; this server takes at most {limit}.")
    opts = Options(max_tokens=options.max_tokens, batch_tokens=batch_tokens, shard_size=_SHARD, bins=options.bins,
                   similarity=options.similarity)  # fmt: skip
    if opts.max_tokens is not None and opts.max_tokens > engine.max_tokens:
        raise APIError(422, "invalid_max_tokens", f"max_tokens {opts.max_tokens} is over {engine.name}'s limit of "
                       f"{engine.max_tokens}.")  # fmt: skip
    manager = job_manager(request)
    job = manager.reserve(engine, len(texts))  # 429 while another job runs
    try:
        t_max = await run_in_threadpool(corpus_jobs.check, engine, texts, opts)  # 413 naming the long text
    except BaseException:
        manager.release(job)
        raise
    # each batch runs in the scheduler's low-priority lane: interactive requests go first
    manager.start(job, engine, texts, opts, t_max, request.app.state.scheduler.background_gate())
    return _accepted(job)


@router.post(
    "",
    status_code=202,
    response_model=CorpusJob,
    responses=error_responses(400, 404, 413, 422, 429, 503),
    summary="Start a corpus job from a list of texts",
)
async def submit(req: CorpusRequest, request: Request, registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """Runs every text and summarises each head over them (as `headmap corpus` does) in the background.
    Follow it with `GET /api/corpus/{id}/events`; one job runs at a time per server (429 otherwise)."""
    engine = registry.get(req.model)
    texts = [Text(i, t) for i, t in enumerate(req.texts, start=1) if t.strip()]
    return await _submit(request, engine, texts, req, settings.corpus_batch_tokens, settings.corpus_max_texts)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes as the body (not multipart), read as `format` says whatever the "
        "Content-Type: one text per line, JSON lines, CSV or Parquet. Any bytes are a valid body; what they hold is "
        "checked when read (422 `invalid_corpus`, naming the line).",
        # Empty schemas: any body is a file to read, so there is no ill-typed body to refuse up front.
        "content": {
            "text/plain": {"schema": {}},
            "application/x-ndjson": {"schema": {}},
            "text/csv": {"schema": {}},
            "application/vnd.apache.parquet": {"schema": {}},
        },
    }
}


@router.post(
    "/upload",
    status_code=202,
    response_model=CorpusJob,
    responses=error_responses(400, 404, 413, 422, 429, 503),
    openapi_extra=_UPLOAD_BODY,
    summary="Start a corpus job from an uploaded file",
)
async def upload(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    format: Annotated[Literal["txt", "jsonl", "csv", "parquet"], Query(description="How to read the body.")] = "txt",
    field: Annotated[str, Query(max_length=200, description="JSON lines: the text field.")] = "text",
    column: Annotated[str | None, Query(max_length=200, description="CSV/Parquet: the text column.")] = None,
    model: Annotated[str | None, Query(max_length=200, description="Model name; default `minilm`.")] = None,
    max_tokens: Annotated[int | None, Query(ge=2, description="Truncate texts to this many tokens.")] = None,
    bins: Annotated[int, Query(ge=2, le=200, description="Histogram bins per head.")] = 20,
    similarity: Annotated[bool, Query(description="Compute head-to-head JS distances.")] = True,
) -> JSONResponse:
    """The same job as `POST /api/corpus`, with the corpus as the request body; errors name the line."""
    options = CorpusOptions(max_tokens=max_tokens, bins=bins, similarity=similarity)
    engine = registry.get(model)
    raw = await request.body()  # bounded by corpus_max_bytes (BodySizeLimit)
    try:
        texts = await run_in_threadpool(lambda: list(parse("upload", raw, format, field, column)))
    except CorpusInputError as exc:
        raise APIError(422, "invalid_corpus", str(exc)) from None
    return await _submit(request, engine, texts, options, settings.corpus_batch_tokens, settings.corpus_max_texts)


@router.get(
    "/{job_id}",
    response_model=CorpusSummary,
    responses={
        202: {"model": CorpusJob, "description": "Still running: the job's progress."},
        **error_responses(404, 409, 413, 422),
    },
    summary="The corpus summary of a finished job",
)
async def summary(job_id: str, request: Request) -> Response:
    """200 with the summary once done; 202 with the progress while running; a failed job's error otherwise."""
    job = job_manager(request).get(job_id)
    if job.status == "running":
        return JSONResponse(job.progress(), status_code=202)
    if job.status == "cancelled":
        raise APIError(409, "job_cancelled", "The job was cancelled before it finished.")
    if job.error is not None:
        raise job.error
    return Response(orjson.dumps(job.summary), media_type="application/json")


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."},
        **error_responses(404),
    },
    summary="The job's progress as server-sent events",
)
async def events(job_id: str, request: Request) -> StreamingResponse:
    """`progress` events (data: the `CorpusJob` fields) whenever texts finish, then one `done` (data: the job)
    or `error` (data: `{error, detail}`), and the stream ends. A comment line every 15 s keeps proxies open."""
    job = job_manager(request).get(job_id)

    async def stream() -> AsyncIterator[bytes]:
        last, beat = -1, time.monotonic()
        while True:
            state = job.progress()
            if state["done"] != last:
                last = state["done"]
                yield _event("progress", state)
            if job.status != "running":
                if job.status == "done":
                    yield _event("done", state)
                else:
                    err = state["error"] or {"error": "job_cancelled", "detail": "The job was cancelled."}
                    yield _event("error", err)
                return
            if time.monotonic() - beat > 15:
                beat = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.1)

    # no-transform: the gzip middleware must pass events through as they come, not hold the stream
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
