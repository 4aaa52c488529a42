"""Head detectors and head similarity: pure tensor math on attention weights, no model, no I/O.

Definitions and references are in ``definitions.DETECTORS`` and ``definitions.SIMILARITY``.
Shapes: L layers, H heads, T tokens; ``attn[l, h, i, j]`` with rows summing to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _check(attn: torch.Tensor) -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must have shape (L, H, T, T), got {tuple(attn.shape)}")


def pattern_score(attn: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor | None:
    """Mean over the query rows that have a target of the attention mass on the targets.

    attn: (L, H, T, T); pattern: (T, T) bool, ``pattern[i, j]`` = key j is a target of query i.
    Returns (L, H) float32, or None when no row has a target.
    """
    rows = pattern.any(-1)  # (T,)
    if not bool(rows.any()):
        return None
    mass = (attn.double() * pattern.double()).sum(-1)  # (L, H, T)
    return mass[..., rows].mean(-1).float()  # (L, H)


def positional_patterns(t: int, special: Sequence[int] = ()) -> dict[str, torch.Tensor | None]:
    """The (T, T) target patterns of the positional detectors; ``special`` = [CLS]/[SEP] positions."""
    eye = torch.eye(t, dtype=torch.bool)
    first = torch.zeros((t, t), dtype=torch.bool)
    first[:, 0] = True
    marks: torch.Tensor | None = None
    if special:
        marks = torch.zeros((t, t), dtype=torch.bool)
        marks[:, list(special)] = True
    return {
        "previous_token": torch.diag(torch.ones(t - 1, dtype=torch.bool), -1) if t > 1 else None,
        "next_token": torch.diag(torch.ones(t - 1, dtype=torch.bool), 1) if t > 1 else None,
        "self": eye,
        "first_token": first,
        "cls_sep": marks,
    }


def repeat_patterns(ids: Sequence[int], content: Sequence[bool]) -> dict[str, torch.Tensor]:
    """Duplicate-token and induction target patterns (T, T) of a token sequence.

    ``content[i]`` is false for special tokens, which are neither queries nor targets.
    duplicate: j < i and ids[j] == ids[i]. induction: key j right after an earlier copy of token i,
    ids[j - 1] == ids[i] with j - 1 < i (the duplicate pattern shifted one key right, as TransformerLens).
    """
    return batch_repeat_patterns(torch.tensor(list(ids)), torch.tensor(list(content), dtype=torch.bool))


def batch_repeat_patterns(ids: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
    """``repeat_patterns`` of many sequences at once: ids (..., T) int, content (..., T) bool (false for special
    tokens and padding) -> each pattern (..., T, T) bool."""
    t = ids.shape[-1]
    ok = content[..., :, None] & content[..., None, :]  # (..., T, T)
    earlier = torch.tril(torch.ones((t, t), dtype=torch.bool), -1)  # j < i
    duplicate = (ids[..., :, None] == ids[..., None, :]) & ok & earlier  # (..., T, T)
    induction = torch.zeros_like(duplicate)
    induction[..., 1:] = duplicate[..., :-1]  # key j = (earlier copy) + 1
    induction &= content[..., None, :]
    return {"duplicate_token": duplicate, "induction": induction}


# -- similarity -------------------------------------------------------------------------------------


def js_distances(attn: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon distance (base 2) between every pair of heads, averaged over query rows.

    attn: (N, T, T), N heads (flatten layers × heads first). Returns (N, N) float64, symmetric, zero
    diagonal, in [0, 1].
    """
    if attn.dim() != 3 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must have shape (N, T, T), got {tuple(attn.shape)}")
    p = attn.double()  # (N, T, T)
    n = p.shape[0]
    out = torch.zeros((n, n), dtype=torch.float64)

    def xlogx(v: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = -torch.special.entr(v)  # v ln v, 0 at v = 0
        return out

    own = xlogx(p).sum(-1)  # (N, T) Σ p ln p
    for a in range(n):
        m = 0.5 * (p[a : a + 1] + p[a:])  # (N - a, T, T)
        # JS divergence = ½ Σ p ln p + ½ Σ q ln q − Σ m ln m, in nats
        div = 0.5 * own[a : a + 1] + 0.5 * own[a:] - xlogx(m).sum(-1)  # (N - a, T)
        dist = (div.clamp(min=0) / np.log(2)).sqrt().mean(-1)  # (N - a,)
        out[a, a:] = dist
        out[a:, a] = dist
    out.fill_diagonal_(0)
    return out


def classical_mds(dist: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """Classical (Torgerson) MDS of a symmetric (N, N) distance matrix -> (N, dims) coordinates.

    B = −½ J D² J with J = I − 11ᵀ/N; coordinates = top eigenvectors × √eigenvalue (negative eigenvalues
    give 0). Each axis's sign is fixed so its largest-magnitude coordinate is positive.
    """
    d = dist.double()
    n = d.shape[0]
    j = torch.eye(n, dtype=torch.float64) - 1.0 / n
    b = -0.5 * j @ (d * d) @ j  # (N, N)
    vals, vecs = torch.linalg.eigh(b)  # ascending
    order = torch.argsort(vals, descending=True)[:dims]
    coords = vecs[:, order] * vals[order].clamp(min=0).sqrt()  # (N, dims)
    if coords.shape[1] < dims:
        coords = torch.cat([coords, torch.zeros((n, dims - coords.shape[1]), dtype=torch.float64)], dim=1)
    signs = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True)))  # (1, dims)
    out: torch.Tensor = coords * torch.where(signs == 0, 1.0, signs)
    return out
