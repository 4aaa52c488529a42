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
    all_layers = list(range(result.attention.shape[0]))
    per_head = service.select(result.attention, all_layers, result.heads)  # (L, h, T, T) every layer
    if "mean" in methods:
        out["mean"] = analysis.mean_over_heads(per_head)[result.layers]  # (l, T, T)
    if "max" in methods:
        out["max"] = analysis.max_over_heads(per_head)[result.layers]  # (l, T, T)
    if "rollout" in methods:
        out["rollout"] = analysis.rollout(per_head)[result.layers]  # (l, T, T), product over layers 0..l
    if "flow" in methods:
        out["flow"] = measures.flow(per_head)[result.layers]  # (l, T, T), through layers 0..l
    if "alti" in methods or "alti_rollout" in methods:
        per_layer, rolled = measures.alti(result.engine, result.enc)  # each (L, T, T), always all heads
        out["alti"], out["alti_rollout"] = per_layer[result.layers], rolled[result.layers]
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


def alignment(a: Encoded, b: Encoded, same_model: bool) -> tuple[bool, str | None, list[int]]:
    """Whether position i means the same slot in ``a`` and ``b``: ``(aligned, reason, mismatched_positions)``.

    Aligned needs equal length, special tokens and segments at the same positions, and, across two
    models, identical token strings (two vocabularies' ids mean nothing to each other). On one
    model, differing words at aligned positions are allowed and listed (minimal pairs).
    """
    if len(a) != len(b):
        return False, f"A has {len(a)} tokens and B has {len(b)}, so positions do not correspond.", []
    if a.special != b.special or a.segments != b.segments:
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
    aligned, reason, mismatched = alignment(a.enc, b.enc, a.engine.name == b.engine.name)
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


def explain_payload(engine: Engine, enc: Encoded, head: int) -> dict[str, Any]:
    """The ``ExplainResponse`` dict: the custom block's forward pass on ``enc``, following ``head``.

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
    h = f"head {head}"

    def proj(name: str, what: str) -> dict[str, Any]:
        return {"name": name, "shape": [e, hd], "description": f"Columns {cols} of the {what} projection (E×E): "
                f"the part that feeds {h}. Its bias b_{name[-1]} has {hd} values."}  # fmt: skip

    steps = [
        {
            "step": 1,
            "key": "embeddings",
            "title": "Embeddings",
            "formula": "X = LayerNorm(token + position + segment embedding)",
            "explanation": f"Each of the {t} tokens becomes a vector of {e} numbers, made from the token itself, "
            "its position and its segment.",
            "parameters": [],
            "matrices": [_matrix("X", "Token vectors fed to the block", x, "features")],
        },
        {
            "step": 2,
            "key": "qkv",
            "title": "Queries, keys and values",
            "formula": "Q = X·W_q + b_q,  K = X·W_k + b_k,  V = X·W_v + b_v",
            "explanation": f"Three learned linear maps turn every token vector into a query (what it looks for), "
            f"a key (what it offers) and a value (what it passes on), each {hd} numbers wide for {h}.",
            "parameters": [proj("W_q", "query"), proj("W_k", "key"), proj("W_v", "value")],
            "matrices": [
                _matrix("Q", f"Queries of {h}", q, "features"),
                _matrix("K", f"Keys of {h}", k, "features"),
                _matrix("V", f"Values of {h}", v, "features"),
            ],
        },
        {
            "step": 3,
            "key": "scores",
            "title": "Scores",
            "formula": f"S = Q·Kᵀ / √d_k,  d_k = {hd}",
            "explanation": "Each query is compared with every key by a dot product, divided by √d_k so the "
            "scores do not grow with the head size.",
            "parameters": [],
            "matrices": [_matrix("S", f"Scores of {h} (row: query token, column: key token)", scores, "tokens")],
        },
        {
            "step": 4,
            "key": "weights",
            "title": "Softmax weights",
            "formula": "A = softmax(S) along each row",
            "explanation": "Softmax turns each row of scores into positive weights that sum to 1: how much each "
            "token attends to every other token. These are the weights /api/attention returns.",
            "parameters": [],
            "matrices": [_matrix("A", f"Attention weights of {h}", weights, "tokens")],
        },
        {
            "step": 5,
            "key": "weighted_sum",
            "title": "Weighted sum of values",
            "formula": "Z = A·V",
            "explanation": "Each token's new vector for this head is the average of all value vectors, weighted "
            "by its attention row.",
            "parameters": [],
            "matrices": [_matrix("Z", f"Output of {h}", mixed, "features")],
        },
        {
            "step": 6,
            "key": "residual_norm",
            "title": "Residual and LayerNorm",
            "formula": "C = concat(Z_0..Z_{n-1})·W_o + b_o,  N = LayerNorm(X + C)",
            "explanation": f"The {nh} heads' outputs are joined and projected back to {e} numbers, added to the "
            "original embeddings (the residual connection) and normalised per token.",
            "parameters": [
                {"name": "W_o", "shape": [e, e], "description": "Output projection joining all heads."},
                {"name": "γ, β", "shape": [e], "description": "LayerNorm scale and shift."},
            ],
            "matrices": [
                _matrix("C", f"All {nh} heads joined and projected", context, "features"),
                _matrix("X + C", "Residual sum", residual, "features"),
                _matrix("N", "After LayerNorm", normed, "features"),
            ],
        },
        {
            "step": 7,
            "key": "output",
            "title": "Linear output",
            "formula": "Y = N·W + b",
            "explanation": "A final learned linear layer maps each normalised token vector to the block's output.",
            "parameters": [{"name": "W", "shape": [e, e], "description": "The block's output Linear layer."}],
            "matrices": [_matrix("Y", "Block output", output, "features")],
        },
    ]
    return {
        **tokens_info(engine, enc),
        "head": head,
        "num_heads": nh,
        "embed_size": e,
        "head_size": hd,
        "steps": steps,
    }
