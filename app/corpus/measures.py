"""What the corpus mode measures per head and text: the ``/api/stats`` statistics, and whatever is registered.

A *producer* turns one padded batch into ``{measure name: (B, L, H) float64}`` (NaN = undefined for that
text); each measure it yields is described by a ``Measure`` (its histogram range may depend on the
longest text of the corpus, known before any forward pass). Head detectors plug in with ``register``:

    register([Measure("prev_token_score", "…", lambda t_max: (0.0, 1.0))], my_producer)

and every run (CLI, workers, Ray, the API) then reports their mean, spread and histogram per head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..attention.batched import STAT_NAMES, batch_head_stats
from ..attention.definitions import DETECTORS, STATISTICS
from ..attention.heads import batch_repeat_patterns


@dataclass(frozen=True)
class Batch:
    """One padded batch as producers see it.

    weights: (L, B, H, T, T) float32, zero outside each text's T_b x T_b block (``batched.mask_padding_``);
    lengths: (B,) token counts; cls, sep: (B, T) bool at the [CLS] / [SEP] positions; tokens: each text's
    token strings; special: each text's special-token flags.
    """

    weights: torch.Tensor
    lengths: torch.Tensor
    cls: torch.Tensor
    sep: torch.Tensor
    tokens: list[list[str]]
    special: list[list[bool]]
    ids: list[list[int]] = field(default_factory=list)  # each text's token ids


@dataclass(frozen=True)
class Measure:
    """One per-head number per text. ``bounds(t_max)`` is the histogram range for a corpus whose longest
    text has ``t_max`` tokens (fixed before the run, so shards' histograms add up exactly)."""

    name: str
    description: str
    bounds: Callable[[int], tuple[float, float]]


Producer = Callable[[Batch], dict[str, torch.Tensor]]


def _share(_: int) -> tuple[float, float]:
    return 0.0, 1.0


#: Histogram range of each statistic for T tokens (shares and weights lie in [0, 1]).
_BOUNDS: dict[str, Callable[[int], tuple[float, float]]] = {
    "entropy": lambda t: (0.0, max(math.log(t), 1e-9)),
    "distance": lambda t: (0.0, float(max(t - 1, 1))),
}
# The definitions are the page's and the API's (attention/definitions.py), never restated here.
_STATS = tuple(Measure(s.id, s.text(markdown=False), _BOUNDS.get(s.id, _share)) for s in STATISTICS)
assert tuple(m.name for m in _STATS) == STAT_NAMES


def _stats(batch: Batch) -> dict[str, torch.Tensor]:
    return batch_head_stats(batch.weights, batch.lengths, batch.cls, batch.sep)


#: The repetition detectors (``heads.repeat_patterns``) on each text's own repeated tokens (the positional
#: detectors are statistics already: to_previous, to_next, to_self, to_first, to_cls + to_sep). NaN for a text
#: without a repeat.
_REPEATS = tuple(
    Measure(
        name,
        f"{DETECTORS[name]['title']}, on the text's own repeated tokens: "
        + DETECTORS[name]["formula"].split(": ", 1)[-1],
        _share,
    )
    for name in ("duplicate_token", "induction")
)


def _repeats(batch: Batch) -> dict[str, torch.Tensor]:
    """Per text, the mean over queries with a target of the attention mass on its targets, the targets as
    ``heads.batch_repeat_patterns`` gives them, for the whole padded batch at once."""
    w = batch.weights  # (L, B, H, T, T), zero outside each text's block
    count, t = w.shape[1], w.shape[-1]
    ids = torch.full((count, t), -1, dtype=torch.long)  # (B, T)
    content = torch.zeros((count, t), dtype=torch.bool)  # (B, T) real, non-special tokens
    for b, (row, special) in enumerate(zip(batch.ids, batch.special, strict=True)):
        ids[b, : len(row)] = torch.tensor(row)
        content[b, : len(row)] = ~torch.tensor(special, dtype=torch.bool)
    out = {}
    for name, pattern in batch_repeat_patterns(ids, content).items():  # each (B, T, T)
        rows = pattern.any(-1)  # (B, T) queries with a target
        pat = pattern.to(w.dtype)[:, None]  # (B, 1, T, T)
        mass = torch.stack([(w[layer] * pat).sum(-1) for layer in range(w.shape[0])])  # (L, B, H, T)
        total = (mass.double() * rows[None, :, None]).sum(-1)  # (L, B, H)
        n = rows.sum(-1).double()  # (B,)
        out[name] = (total / n[None, :, None]).where(n[None, :, None] > 0, math.nan).permute(1, 0, 2)  # (B, L, H)
    return out


_REGISTRY: list[tuple[tuple[Measure, ...], Producer]] = [(_STATS, _stats), (_REPEATS, _repeats)]


def register(measures: Sequence[Measure], producer: Producer) -> None:
    """Add a producer of ``measures`` (e.g. head detectors) to every corpus run in this process."""
    taken = {m.name for m in all_measures()}
    clash = [m.name for m in measures if m.name in taken]
    if clash:
        raise ValueError(f"measure names already registered: {clash}")
    _REGISTRY.append((tuple(measures), producer))


def all_measures() -> list[Measure]:
    return [m for group, _ in _REGISTRY for m in group]


def measure_batch(batch: Batch) -> dict[str, torch.Tensor]:
    """Every registered measure of ``batch``: ``{name: (B, L, H) float64}``."""
    out: dict[str, torch.Tensor] = {}
    for group, producer in _REGISTRY:
        values = producer(batch)
        for m in group:
            out[m.name] = values[m.name].double()
    return out
