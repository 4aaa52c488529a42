"""The insight service behind `/api/stats`, `/api/aggregate`, `/api/compare`, `/api/explain` and reports.

Each ``*_payload`` function turns model output into the response dict of its schema in
``app.insight_schemas`` (matrices stay NumPy arrays, written by ``encoding.dumps``). They block:
call them from a worker thread. The API routes and ``app.report`` share them, so a report shows
exactly the numbers the API returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .. import i18n
from ..attention import stats as analysis
from ..errors import APIError
from ..models.custom import CustomEngine
from ..models.engine import Encoded, Engine
from . import attention as service
from . import measures
from .attention import AttentionResult
from .encoding import round_for_json


def tokens_info(engine: Engine, enc: Encoded) -> dict[str, Any]:
    """The ``TokenInfo`` fields."""
    return {
        "model": engine.name,
        "kind": engine.kind,
        "tokens": enc.tokens,
        **service.token_text(enc),
        "special": enc.special,
        "segments": enc.segments,
        "truncated": enc.truncated,
    }


def cls_sep_positions(engine: Engine, enc: Encoded) -> tuple[list[int], list[int]]:
    """Positions of [CLS] and [SEP] in ``enc`` by the tokenizer's own ``cls_token``/``sep_token`` strings."""
    names = engine.tokenizer.special_tokens_map  # only the tokens the tokenizer defines
    cls = analysis.special_positions(enc.tokens, enc.special, names.get("cls_token"))
    sep = analysis.special_positions(enc.tokens, enc.special, names.get("sep_token"))
    return cls, sep


# -- statistics ------------------------------------------------------------------------------------


def stats_payload(result: AttentionResult, similarity: bool = False) -> dict[str, Any]:
    """The ``StatsResponse`` dict for the result's layers and heads (and their similarity, if asked)."""
    attn = service.select(result.attention, result.layers, result.heads)  # (l, h, T, T)
    cls, sep = cls_sep_positions(result.engine, result.enc)
    stats = analysis.head_stats(attn, cls, sep)  # each (l, h)
    return {
        **tokens_info(result.engine, result.enc),
        "layers": result.layers,
        "heads": result.heads,
        "cls_positions": cls,
        "sep_positions": sep,
        "stats": {name: None if value is None else round_for_json(value) for name, value in vars(stats).items()},
        "similarity": measures.similarity_payload(attn, result.layers, result.heads) if similarity else None,
    }


# -- aggregates ------------------------------------------------------------------------------------


def aggregates(result: AttentionResult, methods: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{method: (len(layers), T, T)}`` over the result's heads, for ``mean``, ``max``, ``rollout``, ``flow``;
    ``alti`` and ``alti_rollout`` always decompose the whole block (all heads)."""
    out: dict[str, torch.Tensor] = {}
    # Rollout and flow at layer l need layers 0..l; mean and max only the asked ones (a capture computes no more).
    upto = list(range(max(result.layers) + 1)) if {"rollout", "flow"} & set(methods) else result.layers
    per_head = service.select(result.attention, upto, result.heads)  # (len(upto), h, T, T)
    rows = [upto.index(layer) for layer in result.layers]
    if "mean" in methods:
        out["mean"] = analysis.mean_over_heads(per_head)[rows]  # (l, T, T)
    if "max" in methods:
        out["max"] = analysis.max_over_heads(per_head)[rows]  # (l, T, T)
    if "rollout" in methods:
        out["rollout"] = analysis.rollout(per_head)[rows]  # (l, T, T), product over layers 0..l
    if "flow" in methods:
        out["flow"] = measures.flow(per_head)[rows]  # (l, T, T), through layers 0..l
    if "alti" in methods or "alti_rollout" in methods:
        per_layer, rolled = measures.alti(result.engine, result.enc)  # each (L, T, T), always all heads
        out["alti"], out["alti_rollout"] = per_layer[result.layers], rolled[result.layers]  # all layers computed
    return out


AGGREGATES = ("mean", "max", "rollout", "flow", "alti", "alti_rollout")


def aggregate_payload(result: AttentionResult, methods: Sequence[str]) -> dict[str, Any]:
    """The ``AggregateResponse`` dict."""
    agg = aggregates(result, methods)
    return {
        **tokens_info(result.engine, result.enc),
        "layers": result.layers,
        "heads": result.heads,
        **{m: round_for_json(agg[m]) if m in methods else None for m in AGGREGATES},
    }


# -- compare ---------------------------------------------------------------------------------------


def alignment(
    a: Encoded, b: Encoded, same_model: bool, mask_id: int | None = None
) -> tuple[bool, str | None, list[int]]:
    """Whether position i means the same slot in ``a`` and ``b``: ``(aligned, reason, mismatched_positions)``.

    Aligned needs equal length, special tokens and segments at the same positions, and, across two
    models, identical token strings (two vocabularies' ids mean nothing to each other). On one
    model, differing words at aligned positions are allowed and listed (minimal pairs); a mask token
    (``mask_id``, typed in the text) stands in for a word there, so a masked token aligns with it.
    """
    if len(a) != len(b):
        return False, f"A has {len(a)} tokens and B has {len(b)}, so positions do not correspond.", []

    def structural(enc: Encoded) -> list[bool]:
        return [sp and i != mask_id for sp, i in zip(enc.special, enc.input_ids, strict=True)]

    if structural(a) != structural(b) or a.segments != b.segments:
        return False, "A and B have their special tokens or segments at different positions.", []
    mismatched = [i for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=True)) if x != y]
    if mismatched and not same_model:
        i = mismatched[0]
        return (
            False,
            f"The two models tokenize differently (position {i}: {a.tokens[i]!r} vs {b.tokens[i]!r}); "
            "compare two models on the same tokens only.",
            [],
        )
    return True, None, mismatched


def compare_view(result: AttentionResult, view: str) -> torch.Tensor:
    """(len(layers), len(heads), T, T) for ``view == "heads"``, else (len(layers), 1, T, T) of the aggregate."""
    if view == "heads":
        return service.select(result.attention, result.layers, result.heads)
    return aggregates(result, [view])[view].unsqueeze(1)


def compare_payload(a: AttentionResult, b: AttentionResult, view: str) -> dict[str, Any]:
    """The ``CompareResponse`` dict; ``a`` and ``b`` were computed with the same layers and heads."""
    same = a.engine.name == b.engine.name
    mask_id = getattr(a.engine.tokenizer, "mask_token_id", None) if same else None
    aligned, reason, mismatched = alignment(a.enc, b.enc, same, mask_id)
    att_a, att_b = compare_view(a, view), compare_view(b, view)  # each (l, h or 1, T_side, T_side)
    return {
        "layers": a.layers,
        "heads": a.heads,
        "view": view,
        "aligned": aligned,
        "reason": reason,
        "mismatched_positions": mismatched,
        "a": {**tokens_info(a.engine, a.enc), "attention": round_for_json(att_a)},
        "b": {**tokens_info(b.engine, b.enc), "attention": round_for_json(att_b)},
        "diff": round_for_json(analysis.difference(att_a, att_b)) if aligned else None,
    }


# -- explainer -------------------------------------------------------------------------------------


def _matrix(name: str, label: str, values: torch.Tensor, columns: str) -> dict[str, Any]:
    if values.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(values.shape)}")
    return {"name": name, "label": label, "shape": list(values.shape), "rows": "tokens", "columns": columns,
            "values": round_for_json(values)}  # fmt: skip


def require_custom(engine: Engine) -> None:
    """422 ``not_custom`` unless ``engine`` is the textbook block (kind ``custom``)."""
    if not isinstance(engine, CustomEngine) or engine.block is None:
        raise APIError(
            422,
            "not_custom",
            f"Model {engine.name!r} is of kind {engine.kind}; the explainer needs a model of kind custom.",
        )


def explain_payload(engine: Engine, enc: Encoded, head: int, lang: str = i18n.DEFAULT) -> dict[str, Any]:
    """The ``ExplainResponse`` dict: the custom block's forward pass on ``enc``, following ``head``, in ``lang``.

    Runs the block's ``trace`` (every intermediate) on one unpadded input. Raises APIError 422 if
    ``engine`` is not the custom block or the numbers are not finite.
    """
    require_custom(engine)
    assert isinstance(engine, CustomEngine) and engine.block is not None
    block = engine.block
    ids = torch.tensor([enc.input_ids])  # (1, T)
    types = torch.tensor([enc.token_type_ids]) if enc.token_type_ids is not None else torch.zeros_like(ids)  # (1, T)
    with torch.inference_mode():
        tr = block.trace(engine.embed(ids, types))  # every field (1, ...)
    t, e = len(enc), block.embed_size
    nh, hd = block.num_heads, e // block.num_heads
    x = tr.embeddings[0]  # (T, E)
    q, k, v = tr.q[0, head], tr.k[0, head], tr.v[0, head]  # each (T, hd)
    scores, weights = tr.scores[0, head], tr.weights[0, head]  # each (T, T)
    mixed = weights @ v  # (T, hd) this head's weighted sum of V
    context, residual, normed, output = tr.context[0], tr.residual[0], tr.normed[0], tr.output[0]  # each (T, E)
    if not all(math.isfinite(float(m.sum())) for m in (x, scores, weights, mixed, residual, normed, output)):
        raise APIError(422, "non_finite_attention", "The block produced NaN or infinite values for this input.")
    cols = f"{head * hd}..{(head + 1) * hd - 1}"

    def tr_(key: str, **params: Any) -> str:
        return i18n.t(lang, f"explain.{key}", **params)

    h = tr_("head", head=head)

    def proj(name: str, what: str) -> dict[str, Any]:
        text = tr_("proj", cols=cols, what=tr_(f"proj_{what}"), head=h, bias=name[-1], size=hd)
        return {"name": name, "shape": [e, hd], "description": text}

    def step(n: int, key: str, formula: str, text: str, parameters: list[Any], matrices: list[Any]) -> dict[str, Any]:
        return {"step": n, "key": key, "title": tr_(f"{key}.title"), "formula": formula, "explanation": text,
                "parameters": parameters, "matrices": matrices}  # fmt: skip

    steps = [
        step(1, "embeddings", "X = LayerNorm(token + position + segment embedding)",
             tr_("embeddings.text", tokens=t, embed=e), [], [_matrix("X", tr_("embeddings.X"), x, "features")]),
        step(2, "qkv", "Q = X·W_q + b_q,  K = X·W_k + b_k,  V = X·W_v + b_v", tr_("qkv.text", size=hd, head=h),
             [proj("W_q", "query"), proj("W_k", "key"), proj("W_v", "value")],
             [_matrix("Q", tr_("qkv.Q", head=h), q, "features"), _matrix("K", tr_("qkv.K", head=h), k, "features"),
              _matrix("V", tr_("qkv.V", head=h), v, "features")]),
        step(3, "scores", f"S = Q·Kᵀ / √d_k,  d_k = {hd}", tr_("scores.text"), [],
             [_matrix("S", tr_("scores.S", head=h), scores, "tokens")]),
        step(4, "weights", "A = softmax(S) along each row", tr_("weights.text"), [],
             [_matrix("A", tr_("weights.A", head=h), weights, "tokens")]),
        step(5, "weighted_sum", "Z = A·V", tr_("weighted_sum.text"), [],
             [_matrix("Z", tr_("weighted_sum.Z", head=h), mixed, "features")]),
        step(6, "residual_norm", "C = concat(Z_0..Z_{n-1})·W_o + b_o,  N = LayerNorm(X + C)",
             tr_("residual_norm.text", heads=nh, embed=e),
             [{"name": "W_o", "shape": [e, e], "description": tr_("residual_norm.W_o")},
              {"name": "γ, β", "shape": [e], "description": tr_("residual_norm.gamma_beta")}],
             [_matrix("C", tr_("residual_norm.C", heads=nh), context, "features"),
              _matrix("X + C", tr_("residual_norm.XC"), residual, "features"),
              _matrix("N", tr_("residual_norm.N"), normed, "features")]),
        step(7, "output", "Y = N·W + b", tr_("output.text"),
             [{"name": "W", "shape": [e, e], "description": tr_("output.W")}],
             [_matrix("Y", tr_("output.Y"), output, "features")]),
    ]  # fmt: skip
    return {
        **tokens_info(engine, enc),
        "head": head,
        "num_heads": nh,
        "embed_size": e,
        "head_size": hd,
        "steps": steps,
    }
