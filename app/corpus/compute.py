"""The corpus computation: plan shards, run a shard on an engine, merge shard results exactly.

A *shard* is a contiguous range of the corpus (input order). A worker tokenizes its texts, sorts them by
length, runs them in padded batches of at most ``batch_tokens`` padded tokens (B x T_max), and measures
every head of every text on the batch tensor (``measures.measure_batch``). The shard's result is the
per-text values (kept in input order) and the sum over its texts of the head-to-head JS distances.

``Accumulator`` merges shard results in shard order, whichever worker produced them and in whichever order
they finished, so one process, N processes and a Ray cluster give the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..attention.batched import batch_js_distance, mask_padding_
from ..attention.stats import special_positions
from ..models.engine import Encoded, Engine, TooLong
from .measures import Batch, Measure, all_measures, measure_batch
from .reader import CorpusInputError, Text


@dataclass(frozen=True)
class Options:
    """Everything that changes the numbers (part of the run's fingerprint)."""

    max_tokens: int | None = None  # truncate to this many tokens; None: fail on texts over the model's limit
    batch_tokens: int = 4096  # padded tokens per forward pass (B x T_max)
    shard_size: int = 1024  # texts per shard: batches by length are formed within a shard, so not much smaller
    bins: int = 20  # histogram bins per head and measure
    similarity: bool = True  # compute the head-to-head JS distances
    # ... over the first N texts only (None: all): they cost ~2x the forward pass, and 1000 texts pin them down
    similarity_texts: int | None = 1000


@dataclass
class ShardSpec:
    """The work of one shard: texts ``start .. start+len(texts)-1`` of the corpus."""

    index: int
    start: int
    texts: list[Text]
    source: str = "input"  # label for messages ("corpus.jsonl")


@dataclass
class ShardResult:
    """Per-text values of one shard, in input order, and its JS distance sum."""

    index: int
    start: int
    lines: np.ndarray  # (n,) int64
    tokens: np.ndarray  # (n,) int64
    truncated: np.ndarray  # (n,) bool
    values: dict[str, np.ndarray]  # {measure: (n, L, H) float64}, NaN where undefined
    js_sum: np.ndarray | None  # (LH, LH) float64, sum over the shard's texts that count for similarity
    js_texts: int = 0  # how many texts that sum is over

    def __len__(self) -> int:
        return len(self.lines)


def limited(engine: Engine, max_tokens: int | None) -> Engine:
    """``engine`` with its token limit lowered to ``max_tokens`` (a copy sharing model and tokenizer)."""
    if max_tokens is None:
        return engine
    if max_tokens > engine.max_tokens:
        raise CorpusInputError(f"--max-tokens {max_tokens} is more than {engine.name}'s limit of {engine.max_tokens}")
    return dataclasses.replace(engine, max_tokens=max_tokens)


def encode(engine: Engine, item: Text, truncate: bool, source: str) -> Encoded:
    """Tokenize one text; a text over the limit without truncation names its file and line."""
    try:
        return engine.encode(item.text, None, truncate, readable=False)  # no labels or word ids: not used here
    except TooLong as exc:
        raise CorpusInputError(
            f"{source}:{item.line}: the text has {exc.num_tokens} tokens; {engine.name} takes at most "
            f"{exc.max_tokens}. Pass --max-tokens N to truncate."
        ) from None


def plan(texts: list[Text], shard_size: int, source: str) -> list[ShardSpec]:
    return [
        ShardSpec(i, start, texts[start : start + shard_size], source)
        for i, start in enumerate(range(0, len(texts), shard_size))
    ]


def fingerprint(engine: Engine, texts: list[Text], options: Options, extra: dict[str, Any]) -> str:
    """A hash of everything that decides the shards' contents: a resumed run must match it."""
    h = hashlib.sha256()
    for part in (engine.name, engine.description, engine.num_layers, engine.num_heads, engine.max_tokens,
                 dataclasses.asdict(options), [m.name for m in all_measures()], sorted(extra.items())):  # fmt: skip
        h.update(repr(part).encode("utf-8"))
    for item in texts:
        h.update(f"{item.line}\x00{len(item.text)}\x00".encode())
        h.update(item.text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Positions grouped by length (shortest first), each group at most ``batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending, so the newest item is the longest
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def padded_attention(engine: Engine, batch: list[Encoded]) -> torch.Tensor:
    """Run a right-padded batch; (L, B, H, T_max, T_max) as the model returns it, padding included."""
    t_max = max(len(e) for e in batch)
    attn = engine.padded(batch)  # (L, B, H, T, T)
    expected = (engine.num_layers, len(batch), engine.num_heads, t_max, t_max)
    if tuple(attn.shape) != expected:
        raise RuntimeError(f"{engine.name}: attention has shape {tuple(attn.shape)}, expected {expected}")
    return attn


def _special_mask(engine: Engine, batch: list[Encoded], key: str) -> torch.Tensor:
    t_max = max(len(e) for e in batch)
    marker = engine.tokenizer.special_tokens_map.get(key)
    out = torch.zeros((len(batch), t_max), dtype=torch.bool)  # (B, T)
    for i, enc in enumerate(batch):
        out[i, special_positions(enc.tokens, enc.special, marker)] = True
    return out


#: Runs one batch's model work and returns its result: ``gate(fn)`` (e.g. a server's low-priority lane).
Gate = Callable[[Callable[[], Any]], Any]


def direct(fn: Callable[[], Any]) -> Any:
    return fn()


def run_shard(engine: Engine, spec: ShardSpec, options: Options, gate: Gate = direct,
              on_batch: Callable[[int], None] | None = None) -> ShardResult:  # fmt: skip
    """Tokenize, batch by length, run and measure one shard. ``engine`` is used from this thread only.

    ``gate`` runs each batch's forward pass and measures (the server passes its scheduler's background
    lane, so interactive requests go first between batches); ``on_batch(texts)`` is called after each batch
    (a progress bar that moves within a shard)."""
    engine = limited(engine, options.max_tokens)
    quick = engine.encode_compute([item.text for item in spec.texts])  # one tokenizer call; None: over the limit
    encs = [e if e is not None else encode(engine, item, options.max_tokens is not None, spec.source)
            for e, item in zip(quick, spec.texts, strict=True)]  # fmt: skip
    n, lh = len(encs), engine.num_layers * engine.num_heads
    values = {m.name: np.full((n, engine.num_layers, engine.num_heads), np.nan) for m in all_measures()}
    js_sum = np.zeros((lh, lh)) if options.similarity else None
    js_texts = 0
    for group in batches([len(e) for e in encs], options.batch_tokens):
        js_texts += int(gate(functools.partial(_run_batch, engine, spec, options, encs, group, values, js_sum)))
        if on_batch is not None:
            on_batch(len(group))
    return ShardResult(
        index=spec.index,
        start=spec.start,
        lines=np.array([t.line for t in spec.texts], dtype=np.int64),
        tokens=np.array([len(e) for e in encs], dtype=np.int64),
        truncated=np.array([e.truncated for e in encs], dtype=bool),
        values=values,
        js_sum=js_sum,
        js_texts=js_texts,
    )


def _run_batch(
    engine: Engine, spec: ShardSpec, options: Options, encs: list[Encoded], group: list[int],
    values: dict[str, np.ndarray], js_sum: np.ndarray | None,
) -> int:  # fmt: skip
    """Run and measure the texts ``group`` of the shard into ``values`` and ``js_sum``; the JS texts added."""
    cap = options.similarity_texts
    js_texts = 0
    batch = [encs[i] for i in group]
    lengths = torch.tensor([len(e) for e in batch])  # (B,)
    # (L, B, H, T, T) float32, padding zeroed in place: the batch's one copy of its weights
    w = mask_padding_(padded_attention(engine, batch).float(), lengths)
    finite = torch.isfinite(w.sum(dim=(0, 2, 3, 4)))  # (B,)
    if not bool(finite.all()):
        bad = spec.texts[group[int((~finite).nonzero()[0])]]
        raise CorpusInputError(f"{spec.source}:{bad.line}: the model produced NaN or infinite weights")
    view = Batch(w, lengths, _special_mask(engine, batch, "cls_token"), _special_mask(engine, batch, "sep_token"),
                 [e.tokens for e in batch], [e.special for e in batch], [e.input_ids for e in batch])  # fmt: skip
    for name, per_text in measure_batch(view).items():  # each (B, L, H)
        values[name][group] = per_text.numpy()
    if js_sum is not None:
        sel = [b for b, i in enumerate(group) if cap is None or spec.start + i < cap]  # first `cap` of the corpus
        if sel:
            js_sum += batch_js_distance(w[:, sel], lengths[sel]).sum(0).numpy()  # (LH, LH)
            js_texts += len(sel)
    del w, view
    return js_texts


# -- merging ---------------------------------------------------------------------------------------


@dataclass
class Moments:
    """Count, mean and sum of squared deviations per head (Chan et al.'s parallel update), float64."""

    count: np.ndarray  # (L, H)
    mean: np.ndarray  # (L, H)
    m2: np.ndarray  # (L, H)

    @staticmethod
    def of(values: np.ndarray) -> Moments:
        """(n, L, H) with NaN for undefined -> moments over the defined values, two-pass."""
        defined = ~np.isnan(values)
        count = defined.sum(0).astype(np.float64)
        total = np.where(defined, values, 0.0).sum(0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        dev = np.where(defined, values - mean, 0.0)
        return Moments(count, mean, (dev * dev).sum(0))

    def merge(self, other: Moments) -> None:
        n = self.count + other.count
        delta = other.mean - self.mean
        safe = np.where(n > 0, n, 1.0)
        self.mean = self.mean + delta * other.count / safe
        self.m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / safe
        self.count = n


@dataclass
class Accumulator:
    """Merges ``ShardResult``s into the corpus summary: moments, histograms, JS distances, token counts."""

    layers: int
    heads: int
    measures: list[Measure]
    t_max: int
    bins: int
    moments: dict[str, Moments] = field(default_factory=dict)
    hist: dict[str, np.ndarray] = field(default_factory=dict)  # {measure: (L, H, bins) int64}
    js_sum: np.ndarray | None = None
    js_texts: int = 0
    texts: int = 0
    tokens: int = 0
    truncated: int = 0
    min_tokens: int = 0
    max_tokens: int = 0
    merged: list[int] = field(default_factory=list)

    def edges(self, m: Measure) -> np.ndarray:
        lo, hi = m.bounds(self.t_max)
        return np.linspace(lo, hi, self.bins + 1)

    def add(self, result: ShardResult) -> None:
        """Merge the next shard; callers add shards in index order (``Merger`` does the ordering)."""
        for m in self.measures:
            values = result.values[m.name]  # (n, L, H)
            moments = Moments.of(values)
            if m.name in self.moments:
                self.moments[m.name].merge(moments)
            else:
                self.moments[m.name] = moments
            lo, hi = m.bounds(self.t_max)
            idx = np.floor((values - lo) / (hi - lo) * self.bins)  # (n, L, H) bin of each value, NaN kept
            counts = np.zeros((self.layers, self.heads, self.bins), dtype=np.int64)
            for b in range(self.bins):
                counts[..., b] = ((np.clip(idx, 0, self.bins - 1) == b) & ~np.isnan(values)).sum(0)
            self.hist[m.name] = self.hist.get(m.name, 0) + counts
        if result.js_sum is not None:
            self.js_sum = result.js_sum.copy() if self.js_sum is None else self.js_sum + result.js_sum
            self.js_texts += result.js_texts
        n = len(result)
        self.min_tokens = int(result.tokens.min()) if not self.texts else min(self.min_tokens, int(result.tokens.min()))
        self.max_tokens = max(self.max_tokens, int(result.tokens.max()))
        self.texts += n
        self.tokens += int(result.tokens.sum())
        self.truncated += int(result.truncated.sum())
        self.merged.append(result.index)

    def measure_summary(self) -> dict[str, Any]:
        """``{measure: {description, count, mean, std, histogram}}``; null where a head never had a value."""
        out: dict[str, Any] = {}
        for m in self.measures:
            mo = self.moments[m.name]
            if not mo.count.any():
                out[m.name] = None
                continue
            mean = np.where(mo.count > 0, mo.mean, np.nan)
            std = np.where(mo.count > 0, np.sqrt(np.divide(mo.m2, mo.count, where=mo.count > 0,
                                                           out=np.zeros_like(mo.m2))), np.nan)  # fmt: skip
            out[m.name] = {
                "description": m.description,
                "count": mo.count.astype(np.int64).tolist(),
                "mean": _nan_to_none(mean),
                "std": _nan_to_none(std),
                "histogram": {"edges": self.edges(m).tolist(), "counts": self.hist[m.name].tolist()},
            }
        return out

    def js_distance(self) -> np.ndarray | None:
        """(LH, LH) mean over texts of the per-text JS distance between heads, or None if not computed."""
        return None if self.js_sum is None or not self.js_texts else self.js_sum / self.js_texts


def _nan_to_none(values: np.ndarray) -> list[Any]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in values.tolist()]


def head_labels(layers: int, heads: int) -> list[str]:
    return [f"L{layer}H{head}" for layer in range(layers) for head in range(heads)]


def clustering(distance: np.ndarray, labels: list[str], max_clusters: int = 8) -> dict[str, Any]:
    """Average-linkage hierarchical clustering of heads (SciPy) on a distance matrix.

    Returns the linkage matrix, the dendrogram's leaf order (for drawing the matrix with similar heads
    together) and a flat cut into at most ``max_clusters`` clusters (labels 1..k per head).
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = distance.shape[0]
    if n < 2:
        return {"method": "average", "linkage": [], "order": list(range(n)), "clusters": [1] * n,
                "num_clusters": n, "labels": labels}  # fmt: skip
    sym = (distance + distance.T) / 2
    np.fill_diagonal(sym, 0.0)
    z = linkage(squareform(sym, checks=False), method="average")
    k = min(max_clusters, n)
    flat = fcluster(z, t=k, criterion="maxclust")
    return {
        "method": "average",
        "linkage": z.tolist(),
        "order": [int(i) for i in leaves_list(z)],
        "clusters": [int(c) for c in flat],
        "num_clusters": int(flat.max()),
        "labels": labels,
    }
