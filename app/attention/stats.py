"""Statistics and aggregates of attention weights: pure functions on tensors, no model, no I/O.

Shapes: L = layers, H = heads, T = tokens. ``attn[l, h, q, k]`` is how much query token ``q``
attends to key token ``k`` in head ``h`` of layer ``l``; each query row sums to 1.

Each per-head statistic is a number per (layer, head) over the head's T x T matrix; the definitions
(formula and meaning) are written once, in ``definitions.STATISTICS``, and ``head_stats`` computes
exactly those. Attention rollout is defined in ``definitions.ROLLOUT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def _check(attn: torch.Tensor, what: str = "attn") -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"{what} must have shape (L, H, T, T), got {tuple(attn.shape)}")


def special_positions(tokens: Sequence[str], special: Sequence[bool], marker: str | None) -> list[int]:
    """Positions ``i`` where ``special[i]`` is true and ``tokens[i] == marker``.

    ``marker`` is the tokenizer's own string for the token (``"[CLS]"`` for BERT, ``"<s>"`` for
    RoBERTa); None (the tokenizer has no such token) gives ``[]``. The flag says the model sees a
    special token there (the one the tokenizer inserted, or a "[SEP]" typed in the text, which is the
    same token id); the string says which one.
    """
    if len(tokens) != len(special):
        raise ValueError(f"{len(tokens)} tokens but {len(special)} special flags")
    if marker is None:
        return []
    return [i for i, (tok, sp) in enumerate(zip(tokens, special, strict=True)) if sp and tok == marker]


@dataclass
class HeadStats:
    """One (L, H) float tensor per statistic (definitions: ``definitions.STATISTICS``)."""

    entropy: torch.Tensor  # (L, H) nats
    distance: torch.Tensor  # (L, H) token positions
    max_weight: torch.Tensor  # (L, H)
    row_max: torch.Tensor  # (L, H)
    to_cls: torch.Tensor | None  # (L, H), None without [CLS] positions
    to_sep: torch.Tensor | None  # (L, H), None without [SEP] positions
    to_self: torch.Tensor  # (L, H)
    to_previous: torch.Tensor | None  # (L, H), None when T = 1
    to_next: torch.Tensor | None  # (L, H), None when T = 1
    to_first: torch.Tensor  # (L, H)


def head_stats(attn: torch.Tensor, cls: Sequence[int] = (), sep: Sequence[int] = ()) -> HeadStats:
    """Per-head statistics of ``attn``.

    attn: (L, H, T, T) weights, rows summing to 1. cls, sep: token positions of [CLS] and [SEP]
    (``special_positions``); empty when the input has none. Returns ``HeadStats`` of (L, H) tensors
    in float32, computed in float64.
    """
    _check(attn)
    t = attn.shape[-1]
    w = attn.double()  # (L, H, T, T)
    pos = torch.arange(t, dtype=torch.float64)
    dist = (pos[:, None] - pos[None, :]).abs()  # (T, T) |q - k|

    def share(keys: Sequence[int]) -> torch.Tensor | None:
        if not keys:
            return None
        return w[..., list(keys)].sum(-1).mean(-1).float()  # (L, H, T, |keys|) -> (L, H)

    def off_diagonal(offset: int) -> torch.Tensor | None:
        if t < 2:
            return None
        # offset -1: w[q, q-1] for q = 1..T-1; offset +1: w[q, q+1] for q = 0..T-2.
        return torch.diagonal(w, offset=offset, dim1=-2, dim2=-1).mean(-1).float()  # (L, H, T-1) -> (L, H)

    return HeadStats(
        entropy=torch.special.entr(w).sum(-1).mean(-1).float(),  # entr(x) = -x ln x, 0 at x = 0
        distance=(w * dist).sum(-1).mean(-1).float(),
        max_weight=w.amax(dim=(-2, -1)).float(),
        row_max=w.amax(dim=-1).mean(-1).float(),
        to_cls=share(cls),
        to_sep=share(sep),
        to_self=torch.diagonal(w, dim1=-2, dim2=-1).mean(-1).float(),
        to_previous=off_diagonal(-1),
        to_next=off_diagonal(1),
        to_first=w[..., 0].mean(-1).float(),  # (L, H, T) column 0 -> (L, H)
    )


def mean_over_heads(attn: torch.Tensor) -> torch.Tensor:
    """(L, H, T, T) -> (L, T, T): the plain mean of the heads; rows still sum to 1."""
    _check(attn)
    return attn.mean(dim=1)


def max_over_heads(attn: torch.Tensor) -> torch.Tensor:
    """(L, H, T, T) -> (L, T, T): elementwise maximum over heads; rows no longer sum to 1."""
    _check(attn)
    return attn.amax(dim=1)


def rollout(attn: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) after every layer.

    attn: (L, H, T, T) of *all* layers 0..L-1 in order (rollout of layer l needs every layer below it).
    Computes ``definitions.ROLLOUT`` (the residual-corrected mean per layer, rows renormalised, times
    the product of the layers below). Returns (L, T, T) float32, rows summing to 1.
    """
    _check(attn)
    t = attn.shape[-1]
    a_hat = 0.5 * attn.double().mean(dim=1) + 0.5 * torch.eye(t, dtype=torch.float64)  # (L, T, T)
    a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
    out = torch.empty_like(a_hat)  # (L, T, T)
    acc = torch.eye(t, dtype=torch.float64)  # (T, T)
    for layer in range(a_hat.shape[0]):
        acc = a_hat[layer] @ acc  # (T, T) newest layer on the left
        out[layer] = acc
    return out.float()


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise ``a - b`` of two attention tensors of the same shape (any rank)."""
    if a.shape != b.shape:
        raise ValueError(f"cannot subtract attention of shape {tuple(b.shape)} from {tuple(a.shape)}")
    return a.float() - b.float()
