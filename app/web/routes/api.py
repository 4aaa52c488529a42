"""The JSON API: attention weights and the model list."""

from __future__ import annotations

import time
from functools import partial

from fastapi import APIRouter
from fastapi.responses import Response

from ... import i18n
from ...schemas.attention import (
    AttentionRequest,
    AttentionResponse,
    Messages,
    ModelInfo,
    ModelList,
)
from ...serving import attention as service
from ...serving import measures as measures_service
from ...serving.memory import STREAM_ABOVE
from ...serving.threads import in_torch_thread
from ..deps import HoldDep, RegistryDep, SchedulerDep, SettingsDep
from ..errors import error_responses
from ..i18n import LangDep
from ..responses import streamed_json, timed_json

router = APIRouter(prefix="/api", tags=["attention"])


@router.post(
    "/attention",
    response_model=AttentionResponse,
    responses=error_responses(400, 404, 413, 422, 503, 504),
    summary="Attention weights of every layer and head for a text",
)
async def attention(
    req: AttentionRequest, registry: RegistryDep, scheduler: SchedulerDep, settings: SettingsDep, hold: HoldDep
) -> Response:
    """Tokenize `text` (and `text_pair`), run the model, return `attention[layer][head][query][key]`.

    With `measure: norms`, the norm-based measure instead (Kobayashi et al. 2020) and `layer_norms`.
    Past `HEADMAP_MAX_RESPONSE_MB`, 413 `response_too_large`: long inputs are read through `POST /api/runs`."""
    start = time.perf_counter()
    limit = settings.max_response_mb
    if req.measure == "norms":
        return timed_json(await measures_service.attention_norms(registry, scheduler, req, hold, limit), start)
    result = await service.compute(registry, scheduler, req, hold, limit)
    if service.body_size(result, req.encoding) > STREAM_ABOVE:  # written a layer at a time as the client reads
        # On the torch thread: the finite check before the body starts is torch work (threads.py).
        length, pieces = await in_torch_thread(partial(service.render_stream, result, req.encoding))
        del result  # the generator holds what it needs
        return streamed_json(length, pieces, start)
    body = await in_torch_thread(partial(service.render, result, req.encoding))
    del result  # the weights are in the body now; free them before sending
    return timed_json(body, start)


@router.get("/models", response_model=ModelList, summary="Models that are loaded and serving")
async def models(registry: RegistryDep) -> ModelList:
    """Each model's name, kind, family, layer and head counts (query and key/value), head size, dtype, parameter
    count, whether it can predict tokens, token limit, source and description."""
    return ModelList(
        default=registry.settings.default_model,
        models=[
            ModelInfo(
                name=e.name,
                kind=e.kind,
                family=e.family,
                num_layers=e.num_layers,
                num_heads=e.num_heads,
                num_kv_heads=e.num_kv_heads,
                head_dim=e.head_dim,
                dtype=e.dtype,
                num_parameters=e.num_parameters,
                can_predict=e.can_predict,
                source=e.source,
                max_tokens=e.max_tokens,
                description=e.description,
                supports_pair=e.supports_pair,
                decoder_layers=e.decoder_layers,
                decoder_heads=e.decoder_heads,
                mask_token=getattr(e.tokenizer, "mask_token", None),
            )
            for e in registry.engines.values()
        ],
    )


@router.get("/messages", response_model=Messages, summary="The interface's messages in the reader's language")
async def messages(lang: LangDep) -> Messages:
    """The message catalogue and glossary for `?lang=`, else the `headmap_lang` cookie, else `Accept-Language`."""
    cat = i18n.catalogue(lang)
    return Messages(lang=lang, languages=list(i18n.LANGUAGES), messages=cat["messages"], glossary=cat["glossary"])
