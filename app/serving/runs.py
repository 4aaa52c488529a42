"""Runs: one long input run once and kept, then read as pooled overviews, exact tiles and one-token vectors.

A run of a model on the attention capture keeps what the capture recorded (per layer post-RoPE queries
[Hq, T, d] and keys [Hkv, T, d]): memory linear in tokens. Weights are computed only when read, a block of
query rows at a time (each row's exact softmax over all keys), so T x T is never held. A model without the
capture (the textbook block, a model that stays eager) keeps its dense [L, H, T, T] weights, so its runs stay
at its `/api/attention` token limit and must fit the cache (413 ``run_too_large`` otherwise).

Runs live in ``RunStore``: bounded by bytes (``HEADMAP_RUN_CACHE_MB``; least recently used goes first) and by
age (``HEADMAP_RUN_TTL_S``, fixed at creation, which is what ``expires_at`` and ``Cache-Control`` say).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from ..attention.blocks import BlockPool, Reduce, block_bounds
from ..errors import APIError
from ..models.capture import Captured
from ..models.engine import Encoded, Engine, self_attention
from ..models.hf import HFEngine, model_max_tokens
from ..models.registry import ModelRegistry
from ..schemas.attention import AttentionRequest
from ..settings import Settings
from . import attention as service
from .memory import FLOAT32, Hold
from .scheduler import Scheduler

#: Most queries (and keys) one tile may span.
MAX_TILE = 512
#: Most cells a side of an overview may have.
MAX_OVERVIEW = 512
#: Floats of weights computed at once for an overview (16 MB): query rows per chunk = this / (heads x T).
CHUNK_FLOATS = 1 << 22
#: Bytes a run holds besides its tensors (ids, bookkeeping), counted so that tiny runs still weigh something.
_OVERHEAD = 4096

Head = int | Literal["mean", "max"]
Axis = Literal["query", "key"]


@dataclass
class Run:
    """One input's attention state: ``Captured`` (queries and keys) or dense [L, H, T, T] weights."""

    run_id: str
    model: str
    attention: Captured | torch.Tensor
    num_layers: int
    num_heads: int
    num_kv_heads: int
    num_tokens: int
    nbytes: int
    expires: float  # on the store's clock (monotonic seconds)
    expires_at: datetime  # the same moment in UTC, for clients

    def rows(self, layer: int, heads: list[int], q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
        """Weights of ``heads`` for queries ``q0:q1`` x keys ``k0:k1``: [h, q, k] float32, rows normalised over
        every key (a part of a row is not renormalised)."""
        if isinstance(self.attention, Captured):
            return self.attention.weights(layer, heads, (q0, q1), (k0, k1))  # [h, q, k]
        return self.attention[layer, heads, q0:q1, k0:k1].float()  # [h, q, k] a copy (a list of heads indexes)


def _tensor_bytes(attention: Captured | torch.Tensor) -> int:
    if isinstance(attention, Captured):
        return attention.nbytes
    return int(attention.untyped_storage().nbytes())


class RunStore:
    """Runs by id, least recently used first; bounded by ``max_bytes`` in total and by ``ttl_s`` each.

    Thread-safe. Expired runs are dropped whenever the store is touched; a dropped run's memory goes back
    once no request still reading it holds it.
    """

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.ttl_s, self.clock = max_bytes, ttl_s, clock
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.evicted = 0
        self.expired = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RunStore:
        return cls(settings.run_cache_mb * 1024 * 1024, settings.run_ttl_s)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._runs)

    def ids(self) -> list[str]:
        """Held run ids, least recently used first."""
        with self._lock:
            self._expire()
            return list(self._runs)

    def _expire(self) -> None:
        now = self.clock()
        for run_id in [r for r, run in self._runs.items() if run.expires <= now]:
            self._drop(run_id)
            self.expired += 1

    def _drop(self, run_id: str) -> None:
        run = self._runs.pop(run_id)
        self.bytes -= run.nbytes

    def check_fits(self, nbytes: int, what: str) -> None:
        """413 ``run_too_large`` when ``nbytes`` alone is over the whole cache."""
        if nbytes > self.max_bytes:
            raise APIError(
                413,
                "run_too_large",
                f"{what} needs {nbytes / 2**20:.1f} MB, more than the whole run cache "
                f"({self.max_bytes / 2**20:.0f} MB, HEADMAP_RUN_CACHE_MB). Shorten the text.",
            )

    def add(self, model: str, attention: Captured | torch.Tensor, num_kv_heads: int) -> Run:
        """Keep a new run, dropping the least recently used ones until it fits; 413 if it alone does not."""
        if isinstance(attention, Captured):
            layers, heads, tokens = attention.num_layers, attention.num_heads, attention.num_tokens
        else:
            layers, heads, tokens = (int(n) for n in attention.shape[:3])
        nbytes = _tensor_bytes(attention) + _OVERHEAD
        self.check_fits(nbytes, f"A run of {tokens} tokens")
        with self._lock:
            self._expire()
            while self._runs and self.bytes + nbytes > self.max_bytes:
                self._drop(next(iter(self._runs)))
                self.evicted += 1
            now = self.clock()
            run = Run(
                run_id=secrets.token_urlsafe(16),
                model=model,
                attention=attention,
                num_layers=layers,
                num_heads=heads,
                num_kv_heads=num_kv_heads,
                num_tokens=tokens,
                nbytes=nbytes,
                expires=now + self.ttl_s,
                expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=self.ttl_s),
            )
            self._runs[run.run_id] = run
            self.bytes += nbytes
            return run

    def get(self, run_id: str) -> Run:
        """The run (now the most recently used); 404 ``run_not_found`` if unknown, expired or evicted."""
        with self._lock:
            self._expire()
            run = self._runs.get(run_id)
            if run is None:
                raise _not_found(run_id)
            self._runs.move_to_end(run_id)
            return run

    def delete(self, run_id: str) -> None:
        with self._lock:
            self._expire()
            if run_id not in self._runs:
                raise _not_found(run_id)
            self._drop(run_id)

    def seconds_left(self, run: Run) -> int:
        return max(0, math.floor(run.expires - self.clock()))


def _not_found(run_id: str) -> APIError:
    return APIError(
        404,
        "run_not_found",
        f"No run {run_id[:64]!r}: it never existed, expired or was dropped to make room. Create it again with "
        "POST /api/runs.",
    )


# -- making a run ---------------------------------------------------------------------------------------


def captures(engine: Engine) -> bool:
    """Whether ``engine`` runs on the attention capture (queries and keys kept, weights computed when asked)."""
    return isinstance(engine, HFEngine) and engine.capture


def token_limit(engine: Engine, settings: Settings) -> int:
    """Most tokens a run of ``engine`` takes: ``HEADMAP_RUN_MAX_TOKENS`` capped by the model's own position limit
    for capture models; dense models keep their `/api/attention` limit (their weights grow with T²)."""
    if isinstance(engine, HFEngine) and engine.capture:
        return min(settings.run_max_tokens, model_max_tokens(engine.model.config, engine.tokenizer))
    return min(settings.run_max_tokens, engine.max_tokens)


def expected_bytes(engine: Engine, num_tokens: int) -> int:
    """What a run of ``num_tokens`` will hold: queries and keys of every layer (capture), else the dense weights."""
    if captures(engine):
        size = torch.finfo(getattr(torch, engine.dtype)).bits // 8
        return engine.num_layers * (engine.num_heads + engine.num_kv_heads) * num_tokens * engine.head_dim * size
    return engine.num_layers * engine.num_heads * num_tokens * num_tokens * 4


def _capture_models(registry: ModelRegistry) -> str:
    names = sorted(name for name, e in registry.engines.items() if captures(e))
    return ", ".join(names) or "none on this server"


def _forward(engine: Engine, enc: Encoded) -> Captured | torch.Tensor:
    """One input through the model alone (blocking: a worker thread): its capture, or dense [L, H, T, T].
    An encoder–decoder's run is its encoder's self-attention over the source (a run has no target)."""
    out = self_attention(engine.run([enc])[0])
    if isinstance(out, Captured):
        return out
    return out.float().contiguous()  # [L, H, T, T] its own storage, not a view of the batch


def create_bytes(engine: Engine, num_tokens: int) -> int:
    """What creating a run reserves from the memory pool: what it keeps, plus the forward pass's activations
    (about 16 x T x hidden floats, hidden = heads x head size; SDPA's scores are never held whole)."""
    return expected_bytes(engine, num_tokens) + FLOAT32 * 16 * num_tokens * engine.num_heads * engine.head_dim


def read_bytes(run: Run, rows: int) -> int:
    """What an overview or tile reserves: ``rows`` query rows of exact softmax over all keys, twice (scores and
    weights)."""
    return 2 * FLOAT32 * rows * run.num_tokens


async def create(
    registry: ModelRegistry,
    scheduler: Scheduler,
    store: RunStore,
    settings: Settings,
    req: AttentionRequest,
    hold: Hold | None = None,
) -> tuple[Run, Encoded, Engine]:
    """Validate, tokenize (up to ``token_limit``), run the model under the scheduler and keep the run."""
    engine, _, _ = service.prepare(registry, req)
    limited = dataclasses.replace(engine, max_tokens=token_limit(engine, settings))  # shares model, tokenizer, lock
    enc = await run_in_threadpool(service.encode, limited, req)
    what = f"A run of {len(enc)} tokens of {engine.name}"
    if not captures(engine):
        what += f" (dense weights: this model has no attention capture; models with it: {_capture_models(registry)})"
    store.check_fits(expected_bytes(engine, len(enc)) + _OVERHEAD, what)
    attention = await scheduler.call(lambda: _forward(engine, enc), create_bytes(engine, len(enc)), hold)
    return store.add(engine.name, attention, engine.num_kv_heads), enc, engine


def info(run: Run, enc: Encoded, engine: Engine) -> dict[str, Any]:
    """The ``RunInfo`` dict."""
    return {
        "run_id": run.run_id,
        "model": engine.name,
        "kind": engine.kind,
        "tokens": enc.tokens,
        **service.token_text(enc),
        "offsets": enc.offsets,
        "special": enc.special,
        "unknown": enc.unknown,
        "segments": enc.segments,
        "truncated": enc.truncated,
        "num_layers": run.num_layers,
        "num_heads": run.num_heads,
        "num_kv_heads": run.num_kv_heads,
        "num_tokens": run.num_tokens,
        "bytes": run.nbytes,
        "expires_at": run.expires_at.isoformat().replace("+00:00", "Z"),
    }


# -- reading a run ---------------------------------------------------------------------------------------


def check_layer_head(run: Run, layer: int, head: Head) -> list[int]:
    """The query heads ``head`` stands for; 422 ``bad_layer`` / ``bad_head`` when out of range."""
    if not 0 <= layer < run.num_layers:
        raise APIError(422, "bad_layer", f"layer {layer} is out of range; this run has layers 0..{run.num_layers - 1}.")
    if isinstance(head, str):
        return list(range(run.num_heads))
    if not 0 <= head < run.num_heads:
        raise APIError(
            422, "bad_head", f"head {head} is out of range; this run has heads 0..{run.num_heads - 1}, mean or max."
        )
    return [head]


def check_tile(run: Run, q0: int, q1: int, k0: int, k1: int) -> None:
    """422 ``bad_range`` unless ``0 <= q0 < q1 <= T`` and ``0 <= k0 < k1 <= T``; 413 ``tile_too_large`` past 512."""
    t = run.num_tokens
    for name, a, b in (("q", q0, q1), ("k", k0, k1)):
        if not 0 <= a < b <= t:
            raise APIError(
                422,
                "bad_range",
                f"{name}0={a}, {name}1={b}: need 0 <= {name}0 < {name}1 <= {t} (this run's tokens, half-open).",
            )
    for name, span in (("queries", q1 - q0), ("keys", k1 - k0)):
        if span > MAX_TILE:
            raise APIError(
                413,
                "tile_too_large",
                f"The tile spans {span} {name}; at most {MAX_TILE} a side. Ask for the overview, or smaller tiles.",
            )


def _combine(weights: torch.Tensor, head: Head) -> torch.Tensor:
    """[h, q, k] -> [q, k]: the one head, or the mean / max over the heads."""
    if head == "mean":
        return weights.mean(dim=0)
    if head == "max":
        return weights.amax(dim=0)
    return weights[0]


def _finite(values: torch.Tensor | np.ndarray) -> None:
    if not math.isfinite(float(values.sum())):
        raise APIError(422, "non_finite_attention", "The model produced NaN or infinite weights for this input.")


def tile(run: Run, layer: int, head: Head, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
    """Exact weights [q1-q0, k1-k0] of one head (or mean/max over heads). Blocking: a worker thread."""
    heads = check_layer_head(run, layer, head)
    with torch.inference_mode():
        out = _combine(run.rows(layer, heads, q0, q1, k0, k1), head)  # [q, k]
    _finite(out)
    return out


def overview(
    run: Run, layer: int, head: Head, size: int, reduce: Reduce
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """``(q_bounds, k_bounds, matrix [n, n])``: ``reduce`` of the weights over each block of queries x keys.

    Query rows are computed a chunk at a time, one head after the other (each row's exact softmax over all keys,
    the heads summed or maxed into the chunk), pooled, and let go: about ``2 x CHUNK_FLOATS`` weights are held at
    once, whatever T. Blocking: a worker thread."""
    heads = check_layer_head(run, layer, head)
    t = run.num_tokens
    bounds = block_bounds(t, size)  # [n + 1]
    pool = BlockPool(bounds, bounds, reduce)
    rows = max(1, CHUNK_FLOATS // t)
    with torch.inference_mode():
        for q0 in range(0, t, rows):
            q1 = min(q0 + rows, t)
            chunk = run.rows(layer, heads[:1], q0, q1, 0, t)[0]  # [r, T]
            for h in heads[1:]:
                w = run.rows(layer, [h], q0, q1, 0, t)[0]  # [r, T]
                chunk = chunk.add_(w) if head == "mean" else torch.maximum(chunk, w, out=chunk)
            if head == "mean":
                chunk = chunk.div_(len(heads))
            pool.add(q0, chunk.numpy())
    matrix = pool.result()  # [n, n]
    _finite(matrix)
    return bounds, bounds, torch.from_numpy(matrix)


def check_index(run: Run, index: int) -> None:
    """422 ``bad_range`` unless ``0 <= index < T``."""
    if not 0 <= index < run.num_tokens:
        raise APIError(
            422, "bad_range", f"index={index}: need 0 <= index < {run.num_tokens} (this run's tokens, 0-based)."
        )


def vector_rows(run: Run, axis: Axis) -> int:
    """Query rows a vector read holds at once (what it reserves through ``read_bytes``)."""
    return run.num_heads if axis == "query" else max(1, CHUNK_FLOATS // run.num_tokens)  # [h x r] rows in all


def vector(run: Run, layer: int, head: Head, index: int, axis: Axis) -> torch.Tensor:
    """One row or one column of the [T, T] weights of a head (or mean/max over heads): [T] float32.

    ``axis="query"``: the weights of query ``index`` over every key (one softmax row per head).
    ``axis="key"``: the weights on key ``index`` from every query: each query row's exact softmax over all keys,
    a chunk of queries (every head's rows of it) at a time, keeping only the key's column, so about
    ``CHUNK_FLOATS`` weights are held at once whatever T. Blocking: a worker thread."""
    heads = check_layer_head(run, layer, head)
    check_index(run, index)
    t = run.num_tokens
    with torch.inference_mode():
        if axis == "query":
            out = _combine(run.rows(layer, heads, index, index + 1, 0, t), head)[0]  # [h, 1, T] -> [T]
        else:
            out = torch.empty(t, dtype=torch.float32)  # [T]
            rows = max(1, CHUNK_FLOATS // (t * len(heads)))  # every head's rows of a chunk at once
            for q0 in range(0, t, rows):
                q1 = min(q0 + rows, t)
                col = run.rows(layer, heads, q0, q1, 0, t)[:, :, index]  # [h, r, T] -> [h, r]
                out[q0:q1] = _combine(col.unsqueeze(-1), head)[:, 0]  # [r]
    _finite(out)
    return out


def etag(run: Run, query: dict[str, Any]) -> str:
    """The validator of one read: the run id (its content never changes) and the normalised query. Weak
    (``W/``): the gzip middleware may send the same answer in another content coding."""
    canonical = "&".join(f"{k}={query[k]}" for k in sorted(query))
    digest = hashlib.sha256(f"{run.run_id}?{canonical}".encode()).hexdigest()[:24]
    return f'W/"{run.run_id}.{digest}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in if_none_match.split(","))
