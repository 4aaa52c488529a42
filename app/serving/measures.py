"""The measures service: norm-based attention, attention flow, ALTI, head detectors and head similarity.

Blocking functions (call from a worker thread) that turn an engine and an input into tensors or
response dicts. The math is in ``attention.measures`` and ``attention.heads``; the formulas in
``attention.definitions``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from ..attention import heads as head_math
from ..attention import measures as math_
from ..attention.definitions import DETECTORS, SIMILARITY
from ..errors import APIError
from ..models import internals
from ..models.engine import Encoded, Engine
from ..models.registry import ModelRegistry
from ..schemas.attention import AttentionRequest
from . import attention as service
from .attention import AttentionResult
from .encoding import dumps, round_for_json
from .memory import Hold
from .scheduler import Scheduler

#: Measures that need the model's inside (value vectors, LayerNorm), not only the weights.
INTERNAL_MEASURES = ("norms", "alti", "alti_rollout")


def require_internals(engine: Engine, measure: str) -> None:
    """422 ``measure_unsupported`` unless ``engine``'s internals can be read for ``measure``."""
    if not internals.supports(engine, measure):
        needs = "value vectors and output projection" if measure == "norms" else "value vectors and LayerNorm"
        raise APIError(
            422,
            "measure_unsupported",
            f"Model {engine.name!r} (kind {engine.kind}) cannot provide `{measure}`: it needs the {needs} of "
            f"{internals.supported_for(measure)}. Use `weights` (or the aggregates mean, max, rollout, flow) "
            "for this model.",
        )


def _non_finite() -> APIError:
    return APIError(422, "non_finite_attention", "The model produced NaN or infinite values for this input.")


def _capture(engine: Engine, enc: Encoded) -> list[internals.LayerInternals]:
    require_internals(engine, "alti")
    layers = internals.capture(engine, enc)
    if not all(math.isfinite(float(layer.output.sum())) for layer in layers):
        raise _non_finite()
    return layers


def norms(engine: Engine, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head norms (L, H, T, T) and per-layer norms (L, T, T) of ``enc`` (Kobayashi et al. 2020).

    BERT-style encoders and the LLM families (grouped-query attention: each query head's value head)."""
    require_internals(engine, "norms")
    layers = internals.capture_values(engine, enc)
    attn = torch.stack([layer.attn for layer in layers])  # (L, H, T, T)
    fx = torch.stack([layer.fx for layer in layers])  # (L, H, T, D)
    if not (math.isfinite(float(attn.sum())) and math.isfinite(float(fx.sum()))):
        raise _non_finite()
    return math_.head_norms(attn, fx), math_.layer_norms(attn, fx)


def alti(engine: Engine, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """ALTI per layer (L, T, T) and rolled out across layers (L, T, T) (Ferrando et al. 2022)."""
    layers = _capture(engine, enc)
    per_layer = torch.stack(
        [
            math_.alti_layer(math_.BlockInputs(lay.x, lay.fx, lay.attn, lay.gamma, lay.sigma, lay.output))
            for lay in layers
        ]
    )  # (L, T, T)
    return per_layer, math_.contribution_rollout(per_layer)


def norms_body(engine: Engine, enc: Encoded, layers: list[int], heads: list[int], encoding: str) -> bytes | memoryview:
    """The `/api/attention` body with ``measure: norms`` (blocking: a worker thread)."""
    heads_norms, layer_norms = norms(engine, enc)  # (L, H, T, T), (L, T, T)
    result = AttentionResult(engine, enc, layers, heads, heads_norms)
    return dumps(service.norms_payload(result, heads_norms, layer_norms, encoding))


async def attention_norms(
    registry: ModelRegistry,
    scheduler: Scheduler,
    req: AttentionRequest,
    hold: Hold | None = None,
    max_response_mb: float | None = None,
) -> bytes | memoryview:
    """Validate, tokenize and compute `/api/attention` with ``measure: norms``, off the event loop.

    Runs its own forward pass with hooks (not batched, like the explainer) under the scheduler's admission
    control (bytes too, into ``hold``), concurrency bound and time limit: 422 first when the model cannot
    provide norms, 413 past ``max_response_mb``.
    """
    engine, layers, heads = service.prepare(registry, req)
    require_internals(engine, "norms")
    enc = await run_in_threadpool(service.encode, engine, req)
    if max_response_mb is not None:
        service.check_response_size(engine, len(enc), layers, heads, req.encoding, max_response_mb)
    nbytes = service.peak_bytes(engine, len(enc), layers, heads, req.encoding, "norms") if hold is not None else 0
    return await scheduler.call(lambda: norms_body(engine, enc, layers, heads, req.encoding), nbytes, hold)


def alti_bytes(engine: Engine, num_tokens: int) -> int:
    """Expected peak of ALTI on top of the attention already held: the hooked forward pass's internals
    (per layer x, f(x) [H, T, D], weights [H, T, T]), one chunk of the (rows, T, D) loop, and the
    (L, T, T) float64 results with their rollout."""
    t, hidden = num_tokens, engine.num_heads * engine.head_dim
    internals_ = 4 * engine.num_layers * (engine.num_heads * t * (hidden + t) + 3 * t * hidden)
    loop = 4 * 3 * math_.ALTI_CHUNK_ELEMENTS
    return internals_ + loop + 8 * 3 * engine.num_layers * t * t


#: measure -> (setting, what it costs, what to use instead), for the 413 past each length bound.
_BOUNDS = {
    "flow": ("HEADMAP_FLOW_MAX_TOKENS", "a max-flow over layers² × tokens⁴ edges", "rollout"),
    "alti": ("HEADMAP_ALTI_MAX_TOKENS", "a vector per layer × tokens²", "norms or rollout"),
    "similarity": ("HEADMAP_SIMILARITY_MAX_TOKENS", "heads² × tokens² logarithms", "fewer heads or layers"),
}


def check_length(measure: str, num_tokens: int, max_tokens: int) -> None:
    """413 ``too_many_tokens_for_<measure>`` past the measure's length bound (a setting)."""
    if num_tokens > max_tokens:
        setting, cost, instead = _BOUNDS[measure]
        raise APIError(
            413,
            f"too_many_tokens_for_{measure}",
            f"The input has {num_tokens} tokens; {measure} is computed for at most {max_tokens} ({setting}; it "
            f"costs {cost}). Shorten the text or use {instead}.",
        )


def flow(attn: torch.Tensor) -> torch.Tensor:
    """(L, H, T, T) of every layer (the requested heads) -> (L, T, T) attention flow."""
    return math_.flow(attn)


# -- head detectors ---------------------------------------------------------------------------------


def _special_wrapping(tok: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one segment ([CLS] ... [SEP], <s> ... </s>, or none)."""
    plain = list(tok("a", add_special_tokens=False)["input_ids"])
    full = list(tok("a")["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def random_repeat(engine: Engine, length: int, seed: int) -> Encoded:
    """A seeded sequence of ``length`` random non-special vocabulary tokens, twice, with the model's specials.

    ``length`` must leave room for the special tokens within ``max_tokens`` (422 otherwise).
    """
    tok = engine.tokenizer
    special = set(tok.all_special_ids)
    vocab = np.array(sorted(set(range(len(tok))) - special))
    if len(vocab) < 2:
        raise APIError(422, "vocabulary_too_small", f"Model {engine.name!r} has fewer than 2 ordinary tokens.")
    rng = np.random.default_rng(seed)
    body = [int(i) for i in rng.choice(vocab, size=length, replace=len(vocab) < length)]
    with engine._tok_lock:  # a fast tokenizer is not re-entrant
        prefix, suffix = _special_wrapping(tok)
        tokens = [str(t) for t in tok.convert_ids_to_tokens(prefix + body + body + suffix)]
    ids = prefix + body + body + suffix
    if len(ids) > engine.max_tokens:
        raise APIError(
            422,
            "random_length_out_of_range",
            f"`random_length` {length} gives {len(ids)} tokens (twice, with special tokens); {engine.name} takes "
            f"at most {engine.max_tokens}.",
        )
    is_special = [i in special for i in ids]
    return Encoded(
        input_ids=ids,
        token_type_ids=[0] * len(ids),
        tokens=tokens,
        offsets=[None] * len(ids),
        special=is_special,
        unknown=[False] * len(ids),
        segments=[0] * len(ids),
        truncated=False,
    )


def detector_scores(
    text_attn: torch.Tensor, special_positions: list[int], rep_attn: torch.Tensor, rep: Encoded
) -> dict[str, torch.Tensor | None]:
    """Every detector's (L, H) score: positional ones on ``text_attn``, duplicate/induction on ``rep_attn``."""
    scores: dict[str, torch.Tensor | None] = {}
    for name, pattern in head_math.positional_patterns(text_attn.shape[-1], special_positions).items():
        scores[name] = None if pattern is None else head_math.pattern_score(text_attn, pattern)
    content = [not s for s in rep.special]
    for name, pattern in head_math.repeat_patterns(rep.input_ids, content).items():
        scores[name] = head_math.pattern_score(rep_attn, pattern)
    return scores


def heads_payload(
    engine: Engine, text_enc: Encoded, text_attn: torch.Tensor, special_positions: list[int],
    rep: Encoded, rep_attn: torch.Tensor, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The ``HeadsResponse`` dict."""
    for attn in (text_attn, rep_attn):
        if not math.isfinite(float(attn.sum())):
            raise APIError(422, "non_finite_attention", "The model produced NaN or infinite weights.")
    scores = detector_scores(text_attn, special_positions, rep_attn, rep)
    return {
        "model": engine.name,
        "kind": engine.kind,
        "num_layers": engine.num_layers,
        "num_heads": engine.num_heads,
        "tokens": text_enc.tokens,
        "random_tokens": rep.tokens,
        "seed": seed,
        "scores": {name: None if s is None else round_for_json(s) for name, s in scores.items()},
        "definitions": DETECTORS,
    }


# -- similarity -------------------------------------------------------------------------------------


def similarity_payload(attn: torch.Tensor, layers: list[int], heads: list[int]) -> dict[str, Any]:
    """The ``HeadSimilarity`` dict of the selected heads. attn: (len(layers), len(heads), T, T)."""
    flat = attn.reshape(-1, attn.shape[-2], attn.shape[-1])  # (N, T, T), layer-major
    dist = head_math.js_distances(flat)  # (N, N)
    coords = head_math.classical_mds(dist)  # (N, 2)
    return {
        "heads": [[layer, head] for layer in layers for head in heads],
        "distance": round_for_json(dist),
        "embedding": round_for_json(coords),
        "definition": SIMILARITY,
    }
