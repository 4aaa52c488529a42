"""The one attention service behind the API, the page and the CLI: validate, tokenize, run, encode."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from ..errors import APIError
from ..models import tokentext
from ..models.capture import Captured
from ..models.engine import Attention, Encoded, Engine, TooLong
from ..models.registry import ModelRegistry
from ..schemas.attention import AttentionRequest
from . import predict
from .encoding import CompactWeights, Weights, dumps, round_for_json
from .scheduler import Scheduler


@dataclass
class AttentionResult:
    """Attention of one request, already cut to the asked layers and heads."""

    engine: Engine
    enc: Encoded
    layers: list[int]
    heads: list[int]
    attention: Attention  # all layers and heads: (L, H, T, T) float32, or captured and computed when selected
    #: Fields only some requests ask for: ``predictions``, ``generated``, ``generated_text``.
    extra: dict[str, Any] = field(default_factory=dict)


def _indices(asked: list[int] | None, count: int, what: str) -> list[int]:
    if asked is None:
        return list(range(count))
    if not asked:
        raise APIError(422, f"{what}_out_of_range", f"`{what}s` must not be empty; omit it or pass null for all.")
    bad = [i for i in asked if not 0 <= i < count]
    if bad:
        raise APIError(
            422,
            f"{what}_out_of_range",
            f"{what} {bad[0]} is out of range; this model has {what}s 0..{count - 1}.",
            message=(f"error.detail.{what}_out_of_range", {"index": bad[0], "last": count - 1}),
        )
    return list(dict.fromkeys(asked))  # drop repeats, keep the caller's order


def prepare(registry: ModelRegistry, req: AttentionRequest) -> tuple[Engine, list[int], list[int]]:
    """Check everything that needs no tokenizing; return the engine and the layer/head indices."""
    if not req.text.strip():
        raise APIError(
            422,
            "empty_text",
            "`text` is empty or only whitespace.",
            message=("error.detail.empty_text", {"field": "text"}),
        )
    if req.text_pair is not None and not req.text_pair.strip():
        raise APIError(
            422,
            "empty_text",
            "`text_pair` is empty or only whitespace; omit it or pass null.",
            message=("error.detail.empty_text", {"field": "text_pair"}),
        )
    for name, value in (("text", req.text), ("text_pair", req.text_pair)):
        # JSON may carry lone surrogates ("\ud800"), which are not text; the tokenizer would raise TypeError.
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(
                    422, "invalid_text", f"`{name}` contains a lone UTF-16 surrogate, which is not a character."
                ) from None
    engine = registry.get(req.model)
    if req.text_pair is not None and not engine.supports_pair:
        raise APIError(422, "pair_unsupported", f"Model {engine.name!r} does not take a `text_pair`.")
    predict.check(engine, req, registry.settings)
    return engine, _indices(req.layers, engine.num_layers, "layer"), _indices(req.heads, engine.num_heads, "head")


def encode(engine: Engine, req: AttentionRequest) -> Encoded:
    """Tokenize (blocking: call from a worker thread). 413 if too long and not truncating."""
    try:
        return engine.encode(req.text, req.text_pair, req.truncate)
    except TooLong as exc:
        raise APIError(
            413,
            "too_many_tokens",
            f"The input has {exc.num_tokens} tokens; {engine.name} takes at most {exc.max_tokens}. "
            'Shorten it or send "truncate": true.',
            message=(
                "error.detail.too_many_tokens",
                {"count": exc.num_tokens, "model": engine.name, "max": exc.max_tokens},
            ),
        ) from None


def select(attn: Attention, layers: list[int], heads: list[int]) -> torch.Tensor:
    """(L, H, T, T) -> (len(layers), len(heads), T, T), a no-copy view when everything is asked for.

    A captured state computes only the asked layers and heads.
    """
    if isinstance(attn, Captured):
        attn = attn.select(layers, heads)  # (l, h, T, T)
    else:
        if layers != list(range(attn.shape[0])):
            attn = attn[layers]
        if heads != list(range(attn.shape[1])):
            attn = attn[:, heads]
    # A NaN or inf anywhere makes the sum non-finite: one reduction instead of a full isfinite pass.
    if not math.isfinite(float(attn.sum())):
        raise APIError(422, "non_finite_attention", "The model produced NaN or infinite weights for this input.")
    return attn


async def compute(registry: ModelRegistry, scheduler: Scheduler, req: AttentionRequest) -> AttentionResult:
    """Validate, tokenize and run ``req`` without blocking the event loop."""
    engine, layers, heads = prepare(registry, req)
    with scheduler.announce(engine):
        enc = await run_in_threadpool(encode, engine, req)
    if req.generate is None and req.predictions is None:
        attn = await scheduler.run(engine, enc)  # (L, H, T, T), batched with other requests
        return AttentionResult(engine, enc, layers, heads, attn)
    return await scheduler.call(lambda: _predict_and_run(registry, engine, enc, req, layers, heads))


def compute_sync(registry: ModelRegistry, req: AttentionRequest) -> AttentionResult:
    """The same as ``compute`` for callers without an event loop (CLI, reports)."""
    engine, layers, heads = prepare(registry, req)
    enc = encode(engine, req)
    if req.generate is not None or req.predictions is not None:
        return _predict_and_run(registry, engine, enc, req, layers, heads)
    attn = engine.run([enc])[0]  # (L, H, T, T) or captured
    return AttentionResult(engine, enc, layers, heads, attn)


def _predict_and_run(registry: ModelRegistry, engine: Engine, enc: Encoded, req: AttentionRequest,
                     layers: list[int], heads: list[int]) -> AttentionResult:  # fmt: skip
    """Generate (if asked), then one forward pass over the whole sequence: attention, and predictions if asked."""
    predict.check_length(engine, enc, req, registry.settings)
    extra: dict[str, Any] = {}
    if req.generate is not None:
        enc, generated, generated_text = predict.generate(engine, enc, req.text, req.generate.max_new_tokens)
        extra |= {"generated": generated, "generated_text": generated_text}
    if req.predictions is None:
        return AttentionResult(engine, enc, layers, heads, engine.run([enc])[0], extra)
    attn, logits = engine.run_lm(enc)  # type: ignore[attr-defined]  # check() made sure it has an LM head
    extra["predictions"] = predict.predictions(engine, enc, logits, req.predictions.top_k)
    return AttentionResult(engine, enc, layers, heads, attn, extra)


def token_text(enc: Encoded) -> dict[str, Any]:
    """``labels``, ``word_ids``, ``unknown_count``, ``unknown_share``: in every response that carries tokens."""
    count, share = tokentext.unknown_share(enc.unknown, enc.special)
    return {"labels": enc.labels, "word_ids": enc.word_ids, "unknown_count": count, "unknown_share": share}


def payload(result: AttentionResult, encoding: str = "json") -> dict[str, Any]:
    """The ``AttentionResponse`` dict; ``attention`` stays ``Weights`` (a tensor view) for ``encoding.dumps``."""
    attn = select(result.attention, result.layers, result.heads)  # (l, h, T, T)
    enc = result.enc
    return {
        "model": result.engine.name,
        "kind": result.engine.kind,
        "tokens": enc.tokens,
        **token_text(enc),
        "offsets": enc.offsets,
        "special": enc.special,
        "unknown": enc.unknown,
        "segments": enc.segments,
        "layers": result.layers,
        "heads": result.heads,
        "attention": Weights(attn) if encoding == "json" else None,
        "attention_compact": CompactWeights(attn) if encoding == "compact" else None,
        "truncated": enc.truncated,
        **result.extra,
    }


def norms_payload(result: AttentionResult, heads_norms: torch.Tensor, layer_norms: torch.Tensor,
                  encoding: str = "json") -> dict[str, Any]:  # fmt: skip
    """The ``AttentionResponse`` dict with ``measure: norms``. heads_norms: (L, H, T, T); layer_norms: (L, T, T)."""
    out = payload(result, encoding)
    norms = select(heads_norms, result.layers, result.heads)  # (l, h, T, T)
    top = max(float(norms.max()), 1e-12) if norms.numel() else 1.0
    out["attention"] = round_for_json(norms) if encoding == "json" else None
    out["attention_compact"] = CompactWeights(norms, top) if encoding == "compact" else None
    out["measure"] = "norms"
    out["layer_norms"] = round_for_json(layer_norms[result.layers])
    return out


def render(result: AttentionResult, encoding: str = "json") -> bytes | memoryview:
    """Response body bytes (blocking: call from a worker thread)."""
    return dumps(payload(result, encoding))
