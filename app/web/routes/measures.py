"""The head detectors: `/api/heads` scores every layer × head as previous-token, induction, sink ... head."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...models.engine import Encoded, dense, self_attention
from ...schemas.attention import AttentionRequest
from ...schemas.measures import HeadsRequest, HeadsResponse
from ...serving import attention as service
from ...serving import insight as insight_service
from ...serving import measures as measures_service
from ...serving.encoding import dumps
from ...serving.threads import in_torch_thread
from ..deps import HoldDep, RegistryDep, SchedulerDep
from ..errors import error_responses
from ..responses import timed_json

router = APIRouter(prefix="/api", tags=["measures"])


@router.post(
    "/heads",
    response_model=HeadsResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Head types of every layer × head: previous/next token, self, sink, [CLS]/[SEP], duplicate, induction",
)
async def heads(req: HeadsRequest, registry: RegistryDep, scheduler: SchedulerDep, hold: HoldDep) -> Response:
    """TransformerLens-style detector scores `[layer][head]`; each detector's formula is in `definitions`.

    The positional detectors run on `text` (or, without it, on the random sequence); duplicate-token and
    induction on a seeded sequence of random vocabulary tokens shown twice."""
    start = time.perf_counter()
    text_req = None
    if req.text is not None:
        text_req = AttentionRequest(text=req.text, text_pair=req.text_pair, model=req.model, truncate=req.truncate)
        engine, _, _ = service.prepare(registry, text_req)  # empty text, unknown model, pair support
    else:
        engine = registry.get(req.model)
    rep = await run_in_threadpool(measures_service.random_repeat, engine, req.random_length, req.seed)
    text_enc = rep
    if text_req is not None:
        with scheduler.announce(engine):
            text_enc = await run_in_threadpool(service.encode, engine, text_req)
    # Both inputs go through the batcher together (one forward pass when they fit one batch).
    every_layer, every_head = list(range(engine.num_layers)), list(range(engine.num_heads))

    def peak(enc: Encoded) -> int:  # every head densely, its detector scores computed on it
        return service.peak_bytes(engine, len(enc), every_layer, every_head, "json")

    rep_attn, text_attn = await asyncio.gather(
        scheduler.run(engine, rep, peak(rep), hold), scheduler.run(engine, text_enc, peak(text_enc), hold)
    )
    cls, sep = insight_service.cls_sep_positions(engine, text_enc)
    body = await in_torch_thread(
        lambda: dumps(
            measures_service.heads_payload(
                engine,
                text_enc,
                dense(self_attention(text_attn)),
                sorted({*cls, *sep}),
                rep,
                dense(self_attention(rep_attn)),
                req.seed,  # encoder-decoders: the encoder's
            )
        )
    )
    return timed_json(body, start)
