"""The one attention service behind the API, the page and the CLI: validate, tokenize, run, encode."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from ..errors import APIError
from ..models import tokentext
from ..models.capture import Captured
from ..models.engine import Attention, Encoded, Engine, Output, Seq2SeqAttention, TooLong, self_attention
from ..models.registry import ModelRegistry
from ..schemas.attention import AttentionRequest
from . import memory, predict
from .encoding import CompactWeights, LayerStream, Weights, dumps, round_for_json, stream
from .memory import Hold
from .scheduler import Scheduler


@dataclass
class AttentionResult:
    """Attention of one request, already cut to the asked layers and heads."""

    engine: Engine
    enc: Encoded
    layers: list[int]
    heads: list[int]
    attention: Attention  # all layers and heads: (L, H, T, T) float32, or captured and computed when selected
    #: Encoder–decoder models: the decoder's self-attention (Ld, Hd, T, T) and cross-attention (Ld, Hd, T, S),
    #: and the decoder layers/heads asked for; ``attention`` is then the encoder's (L, H, S, S).
    decoder: Attention | None = None
    cross: Attention | None = None
    decoder_layers: list[int] = field(default_factory=list)
    decoder_heads: list[int] = field(default_factory=list)
    #: Fields only some requests ask for: ``predictions``, ``generated``, ``generated_text``.
    extra: dict[str, Any] = field(default_factory=dict)


def result_of(engine: Engine, enc: Encoded, layers: list[int], heads: list[int], out: Output) -> AttentionResult:
    """An ``AttentionResult`` from one item of ``Engine.run``; an encoder–decoder item's three attentions split out."""
    if not isinstance(out, Seq2SeqAttention):
        return AttentionResult(engine, enc, layers, heads, out)
    dec_layers = layers if engine.decoder_layers is None or layers != list(range(engine.num_layers)) else None
    dec_heads = heads if engine.decoder_heads is None or heads != list(range(engine.num_heads)) else None
    return AttentionResult(
        engine,
        enc,
        layers,
        heads,
        out.encoder,
        decoder=out.decoder,
        cross=out.cross,
        decoder_layers=dec_layers if dec_layers is not None else list(range(engine.decoder_layers or 0)),
        decoder_heads=dec_heads if dec_heads is not None else list(range(engine.decoder_heads or 0)),
    )


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
    target = getattr(req, "target", None)  # absent from requests that take none (compare sides, measures)
    if target is not None and not target.strip():
        raise APIError(
            422,
            "empty_text",
            "`target` is empty or only whitespace; omit it or pass null.",
            message=("error.detail.empty_text", {"field": "target"}),
        )
    for name, value in (("text", req.text), ("text_pair", req.text_pair), ("target", target)):
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
    if target is not None and engine.kind != "encoder-decoder":
        raise APIError(
            422,
            "target_unsupported",
            f"Model {engine.name!r} is of kind {engine.kind}; only encoder-decoder models (T5, BART, Marian) take "
            "a `target`.",
            message=("error.detail.target_unsupported", {"model": engine.name, "kind": engine.kind}),
        )
    layers, heads = _indices(req.layers, engine.num_layers, "layer"), _indices(req.heads, engine.num_heads, "head")
    # `layers`/`heads` apply to the decoder's self- and cross-attention too: in range there as well.
    if engine.decoder_layers is not None and req.layers is not None:
        _indices(req.layers, engine.decoder_layers, "layer")
    if engine.decoder_heads is not None and req.heads is not None:
        _indices(req.heads, engine.decoder_heads, "head")
    predict.check(engine, req, registry.settings)
    return engine, layers, heads


def encode(engine: Engine, req: AttentionRequest) -> Encoded:
    """Tokenize (blocking: call from a worker thread). 413 if too long and not truncating.

    Encoder–decoder models also get the decoder's input (``Encoded.target``): the start token, then ``target``."""
    try:
        enc = engine.encode(req.text, req.text_pair, req.truncate)
    except TooLong as exc:
        raise _too_long(engine, exc) from None
    if engine.kind == "encoder-decoder":
        try:
            enc.target = engine.encode_target(getattr(req, "target", None), req.truncate)
        except TooLong as exc:
            raise _too_long(engine, exc, "target") from None
    return enc


def _too_long(engine: Engine, exc: TooLong, field: str = "input") -> APIError:
    if field == "target":
        return APIError(
            413,
            "too_many_tokens",
            f"The target has {exc.num_tokens} tokens (with the decoder's start token); {engine.name} takes at most "
            f'{exc.max_tokens}. Shorten it or send "truncate": true.',
            message=(
                "error.detail.too_many_target_tokens",
                {"count": exc.num_tokens, "model": engine.name, "max": exc.max_tokens},
            ),
        )
    return APIError(
        413,
        "too_many_tokens",
        f"The input has {exc.num_tokens} tokens; {engine.name} takes at most {exc.max_tokens}. "
        'Shorten it or send "truncate": true.',
        message=(
            "error.detail.too_many_tokens",
            {"count": exc.num_tokens, "model": engine.name, "max": exc.max_tokens},
        ),
    )


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


def captures(engine: Engine) -> bool:
    """Whether ``engine.run`` gives captured states (weights computed when asked) rather than dense ones."""
    return bool(getattr(engine, "capture", False))


def peak_bytes(engine: Engine, num_tokens: int, layers: list[int], heads: list[int], encoding: str,
               measure: str = "weights", target_tokens: int = 0) -> int:  # fmt: skip
    """What one request for ``engine`` is expected to hold at its peak (``memory.attention_bytes``)."""
    return memory.attention_bytes(
        num_layers=engine.num_layers,
        num_heads=engine.num_heads,
        head_dim=engine.head_dim,
        num_tokens=num_tokens,
        captured=captures(engine),
        layers=len(layers),
        heads=len(heads),
        encoding=encoding,
        measure=measure,
        target_tokens=target_tokens,
    )


def check_response_size(engine: Engine, num_tokens: int, layers: list[int], heads: list[int], encoding: str,
                        max_mb: float, target_tokens: int = 0) -> None:  # fmt: skip
    """413 ``response_too_large`` when the weights (with an encoder–decoder's ``target_tokens``, its decoder and
    cross weights too) would pass ``max_mb`` MiB."""
    size = memory.response_bytes(num_tokens, len(layers), len(heads), encoding, target_tokens)
    limit = max_mb * memory.MIB
    if size <= limit:
        return
    ways = ["open a run with POST /api/runs (same body without layers, heads and encoding) and read its overviews "
            "and tiles"]  # fmt: skip
    per_matrix = memory.response_bytes(num_tokens, 1, 1, encoding, target_tokens)
    if per_matrix <= limit:
        fit = max(1, int(limit // per_matrix))
        ways.append(f"ask for a subset: `layers` and `heads` of at most {fit} layer × head matrices together")
    compact = memory.response_bytes(num_tokens, len(layers), len(heads), "compact", target_tokens)
    if encoding == "json" and compact <= limit:
        ways.append('send `"encoding": "compact"` (1.33 bytes a weight instead of 7)')
    raise APIError(
        413,
        "response_too_large",
        f"The response would be about {size / memory.MIB:.0f} MiB ({len(layers)} layers × {len(heads)} heads × "
        f"{num_tokens}² weights as {encoding}); this server sends at most {max_mb:g} MiB (HEADMAP_MAX_RESPONSE_MB). "
        f"Instead, {'; or '.join(ways)}.",
    )


async def compute(
    registry: ModelRegistry,
    scheduler: Scheduler,
    req: AttentionRequest,
    hold: Hold | None = None,
    max_response_mb: float | None = None,
) -> AttentionResult:
    """Validate, tokenize and run ``req`` without blocking the event loop.

    The request's expected peak (``peak_bytes``) is reserved into ``hold`` before its forward pass (the
    route releases it once the response is sent). With ``max_response_mb``, 413 past that response size
    before any model work.
    """
    engine, layers, heads = prepare(registry, req)
    with scheduler.announce(engine):
        enc = await run_in_threadpool(encode, engine, req)
    target = len(enc.target) if enc.target is not None else 0
    if max_response_mb is not None:
        check_response_size(engine, len(enc), layers, heads, req.encoding, max_response_mb, target)
    # Generation grows the input: reserve for prompt + the new tokens asked for, and the logits predictions hold.
    total = len(enc) + (req.generate.max_new_tokens if req.generate is not None else 0)
    nbytes = peak_bytes(engine, total, layers, heads, req.encoding, target_tokens=target) if hold is not None else 0
    if req.predictions is not None and hold is not None:
        nbytes += predict.logits_bytes(engine, total)
    if req.generate is None and req.predictions is None:
        attn = await scheduler.run(engine, enc, nbytes, hold)  # (L, H, T, T), captured, or encoder-decoder
        return result_of(engine, enc, layers, heads, attn)
    return await scheduler.call(lambda: _predict_and_run(registry, engine, enc, req, layers, heads), nbytes, hold)


def compute_sync(registry: ModelRegistry, req: AttentionRequest) -> AttentionResult:
    """The same as ``compute`` for callers without an event loop (CLI, reports)."""
    engine, layers, heads = prepare(registry, req)
    enc = encode(engine, req)
    if req.generate is not None or req.predictions is not None:
        return _predict_and_run(registry, engine, enc, req, layers, heads)
    attn = engine.run([enc])[0]  # (L, H, T, T) or captured
    return result_of(engine, enc, layers, heads, attn)


def _predict_and_run(registry: ModelRegistry, engine: Engine, enc: Encoded, req: AttentionRequest,
                     layers: list[int], heads: list[int]) -> AttentionResult:  # fmt: skip
    """Generate (if asked), then one forward pass over the whole sequence: attention, and predictions if asked."""
    predict.check_length(engine, enc, req, registry.settings)
    extra: dict[str, Any] = {}
    if req.generate is not None:
        enc, generated, generated_text = predict.generate(engine, enc, req.text, req.generate.max_new_tokens)
        extra |= {"generated": generated, "generated_text": generated_text}
    if req.predictions is None:
        return AttentionResult(engine, enc, layers, heads, self_attention(engine.run([enc])[0]), extra=extra)
    attn, logits = engine.run_lm(enc)  # type: ignore[attr-defined]  # check() made sure it has an LM head
    extra["predictions"] = predict.predictions(engine, enc, logits, req.predictions.top_k)
    return AttentionResult(engine, enc, layers, heads, attn, extra=extra)


def token_text(enc: Encoded) -> dict[str, Any]:
    """``labels``, ``word_ids``, ``unknown_count``, ``unknown_share``: in every response that carries tokens."""
    count, share = tokentext.unknown_share(enc.unknown, enc.special)
    return {"labels": enc.labels, "word_ids": enc.word_ids, "unknown_count": count, "unknown_share": share}


def payload(result: AttentionResult, encoding: str = "json") -> dict[str, Any]:
    """The ``AttentionResponse`` dict; ``attention`` stays ``Weights`` (a tensor view) for ``encoding.dumps``."""
    attn = select(result.attention, result.layers, result.heads)  # (l, h, T, T)
    out = payload_fields(result)
    out["attention"] = Weights(attn) if encoding == "json" else None
    out["attention_compact"] = CompactWeights(attn) if encoding == "compact" else None
    out["truncated"] = result.enc.truncated
    out.update(seq2seq_payload(result, encoding))
    out.update(result.extra)  # predictions, generated, generated_text: only when asked for
    return out


def payload_fields(result: AttentionResult) -> dict[str, Any]:
    """The ``AttentionResponse`` fields before ``attention``, in the response's order."""
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
    }


def seq2seq_payload(result: AttentionResult, encoding: str = "json") -> dict[str, Any]:
    """Encoder–decoder fields of ``AttentionResponse`` (target tokens, decoder and cross-attention); {} otherwise."""
    target = result.enc.target
    if result.decoder is None or result.cross is None or target is None:
        return {}
    decoder = select(result.decoder, result.decoder_layers, result.decoder_heads)  # (l, h, T, T)
    cross = select(result.cross, result.decoder_layers, result.decoder_heads)  # (l, h, T, S)
    return {
        "target_tokens": target.tokens,
        "target_labels": target.labels,
        "target_word_ids": target.word_ids,
        "target_offsets": target.offsets,
        "target_special": target.special,
        "target_unknown": target.unknown,
        "target_truncated": target.truncated,
        "decoder_layers": result.decoder_layers,
        "decoder_heads": result.decoder_heads,
        "decoder_attention": Weights(decoder) if encoding == "json" else None,
        "decoder_attention_compact": CompactWeights(decoder) if encoding == "compact" else None,
        "cross_attention": Weights(cross) if encoding == "json" else None,
        "cross_attention_compact": CompactWeights(cross) if encoding == "compact" else None,
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


def _check_finite(attn: Attention, layers: list[int], heads: list[int]) -> None:
    """422 before a streamed body starts if the weights it would write are not finite.

    Captured: the queries and keys the weights come from (finite scores give finite softmax rows). Dense:
    the asked weights, summed a layer at a time (no copy of the selection).
    """
    if isinstance(attn, Captured):
        total = sum(float(attn.layers[i].q.sum()) + float(attn.layers[i].k.sum()) for i in layers)
    else:
        total = sum(float(attn[i, heads].sum()) for i in layers)
    if not math.isfinite(total):
        raise APIError(422, "non_finite_attention", "The model produced NaN or infinite weights for this input.")


def body_size(result: AttentionResult, encoding: str) -> int:
    """Bytes of the ``attention`` field of ``result``'s response (before the small fields)."""
    return memory.response_bytes(len(result.enc), len(result.layers), len(result.heads), encoding)


def render_stream(result: AttentionResult, encoding: str = "json") -> tuple[int, Iterator[bytes | memoryview]]:
    """The same body as ``render``, as its length and pieces written a layer at a time as they are asked for
    (each ``next`` is blocking: a worker thread). Only one layer's weights and text are held at a time."""
    attn, layers, heads = result.attention, result.layers, result.heads
    _check_finite(attn, layers, heads)
    all_heads = heads == list(range(result.engine.num_heads))

    def layer(i: int) -> torch.Tensor:  # (h, T, T)
        if isinstance(attn, Captured):
            return attn.weights(layers[i], None if all_heads else heads)
        return attn[layers[i]] if all_heads else attn[layers[i], heads]

    t = len(result.enc)
    weights = LayerStream((len(layers), len(heads), t, t), layer, encoding)
    out = payload_fields(result)
    out["attention"] = weights if encoding == "json" else None
    out["attention_compact"] = weights if encoding == "compact" else None
    out["truncated"] = result.enc.truncated
    out.update(seq2seq_payload(result, encoding))  # decoder and cross weights written whole (a decoder's size)
    out.update(result.extra)
    return stream(out)
