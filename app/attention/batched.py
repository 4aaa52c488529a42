"""Head statistics and head-to-head Jensen–Shannon distances on a *padded batch*, one number per text.

The corpus mode runs texts in right-padded batches and computes everything on the batch tensor, so no
attention matrix is ever cut apart, copied or serialised per text. Padding is masked exactly: a key
position past a text's length is weighted 0 (what cutting it away does; models already give it ~0), and
a query row past the length is left out of every average. For one text the numbers equal
``stats.head_stats`` on its unpadded (L, H, T, T) tensor (same formulas, see that module's docstring).

Shapes: L layers, B texts, H heads, T the batch's longest text. ``attn[l, b, h, q, k]``.
Statistics that are undefined for a text (no [CLS], T = 1 for the neighbours) are NaN for that text.
"""

from __future__ import annotations

import math

import torch

#: The statistics ``batch_head_stats`` returns, in the order of ``stats.HeadStats``.
STAT_NAMES = (
    "entropy", "distance", "max_weight", "row_max", "to_cls", "to_sep", "to_self", "to_previous", "to_next", "to_first"
)  # fmt: skip


def _check(attn: torch.Tensor, lengths: torch.Tensor) -> None:
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must have shape (L, B, H, T, T), got {tuple(attn.shape)}")
    if lengths.shape != (attn.shape[1],):
        raise ValueError(f"lengths must have shape ({attn.shape[1]},), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > attn.shape[-1]:
        raise ValueError(f"lengths must be in 1..{attn.shape[-1]}")


def token_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) float64, 1 at real positions and 0 at padding."""
    return (torch.arange(t)[None, :] < lengths[:, None]).double()  # (B, T)


def mask_padding_(w: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero padded keys *and* padded query rows of (L, B, H, T, T) ``w`` in place (one pass); returns ``w``."""
    _check(w, lengths)
    real = token_mask(lengths, w.shape[-1]).to(w.dtype)  # (B, T)
    rows_keys = real[:, :, None] * real[:, None, :]  # (B, T, T) 1 where both query and key are real
    with torch.inference_mode():  # the model's output is an inference tensor: updated in place only in this mode
        return w.mul_(rows_keys[None, :, None])  # (L, B, H, T, T)


def masked_weights(attn: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(L, B, H, T, T) -> float64 copy with padded keys *and* padded query rows set to 0."""
    return mask_padding_(attn.double(), lengths)


def batch_head_stats(
    w: torch.Tensor, lengths: torch.Tensor, cls: torch.Tensor, sep: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-text head statistics of a padded batch.

    w: (L, B, H, T, T) weights, zero outside each text's T_b x T_b block (``mask_padding_``); float32 (the
    corpus) or float64. The passes over the whole tensor (entropy, distance, row maxima, [CLS]/[SEP] shares
    as matrix-vector products) run in ``w``'s dtype, each summing at most T terms per row; everything after
    the per-row reduction is float64. lengths: (B,) real token counts; cls, sep: (B, T) bool, True at a
    text's [CLS] / [SEP] positions (``stats.special_positions``). Returns ``{name: (B, L, H)}`` float64 for
    every name in ``STAT_NAMES``, NaN where the statistic is undefined for a text.
    """
    _check(w, lengths)
    t = w.shape[-1]
    real = token_mask(lengths, t)  # (B, T) float64
    n = lengths.double()  # (B,)
    pos = torch.arange(t, dtype=w.dtype)
    dist = (pos[:, None] - pos[None, :]).abs()  # (T, T) |q - k|

    def row_mean(rows: torch.Tensor) -> torch.Tensor:
        """(L, B, H, T) per query row -> (B, L, H) float64 mean over each text's real rows."""
        return ((rows.double() * real[None, :, None]).sum(-1) / n[None, :, None]).permute(1, 0, 2)

    def share(keys: torch.Tensor) -> torch.Tensor:
        to_keys = torch.matmul(w, keys.to(w.dtype)[None, :, None, :, None]).squeeze(-1)  # (L, B, H, T)
        out = row_mean(to_keys)  # (B, L, H)
        missing = ~keys.any(dim=1)  # (B,) texts without such a token
        return out.masked_fill(missing[:, None, None], math.nan)

    def neighbour(offset: int) -> torch.Tensor:
        # offset -1: element i is w[i+1, i] (q = i+1 looks back); +1: w[i, i+1]. Valid for i < T_b - 1.
        diag = torch.diagonal(w, offset=offset, dim1=-2, dim2=-1).double()  # (L, B, H, T-1)
        valid = (torch.arange(t - 1)[None, :] < (lengths - 1)[:, None]).double()  # (B, T-1)
        count = (lengths - 1).double()  # (B,)
        out = ((diag * valid[None, :, None]).sum(-1) / count.clamp(min=1)[None, :, None]).permute(1, 0, 2)
        return out.masked_fill((lengths < 2)[:, None, None], math.nan)  # (B, L, H)

    undefined = torch.full((w.shape[1], w.shape[0], w.shape[2]), math.nan, dtype=torch.float64)  # (B, L, H)
    row_max = w.amax(dim=-1)  # (L, B, H, T); weights >= 0, so the zeroed padding never wins
    return {
        "entropy": row_mean(torch.special.entr(w).sum(-1)),  # entr(0) = 0: padding adds nothing
        "distance": row_mean((w * dist).sum(-1)),
        "max_weight": row_max.amax(dim=-1).double().permute(1, 0, 2),
        "row_max": row_mean(row_max),
        "to_cls": share(cls),
        "to_sep": share(sep),
        "to_self": row_mean(torch.diagonal(w, dim1=-2, dim2=-1)),
        "to_previous": neighbour(-1) if t > 1 else undefined,
        "to_next": neighbour(1) if t > 1 else undefined,
        "to_first": row_mean(w[..., 0]),  # (L, B, H, T) column 0
    }


def batch_js_distance(w: torch.Tensor, lengths: torch.Tensor, chunk_bytes: int = 4 << 20) -> torch.Tensor:
    """Jensen–Shannon distance between every pair of heads, per text, averaged over its query rows.

    w: (L, B, H, T, T) from ``mask_padding_`` (float32 is converted: the distance is a square root, so float32
    rounding of a near-zero divergence would show as ~1e-3); lengths: (B,). Heads are flattened layer-major
    (index l*H + h). For query row q of heads i and j, with p = w_i[q, :], r = w_j[q, :] and m = (p + r) / 2,
    ``JSD = H(m) - (H(p) + H(r)) / 2`` in nats and the distance is ``sqrt(JSD / ln 2)`` (base 2, so in
    [0, 1]; SciPy's ``jensenshannon(p, r, base=2)``). Returns (B, LH, LH) float64, the mean over each
    text's real rows; symmetric with a zero diagonal.

    One text at a time, on its own T_b x T_b block (no padding), and heads i in chunks against heads j >= i
    (the distance is symmetric), each chunk's temporaries about ``chunk_bytes``: small enough to stay in the
    CPU's cache, where the element-wise passes (sum, entropy, reduction) are several times faster than over
    a whole batch's temporaries in memory.
    """
    _check(w, lengths)
    layers, b, h = w.shape[:3]
    lh = layers * h
    out = torch.zeros((b, lh, lh), dtype=torch.float64)
    for text in range(b):
        n = int(lengths[text])
        p = w[:, text, :, :n, :n].reshape(lh, n, n).double()  # (LH, n, n)
        # With u = p + r = 2m: H(m) = (H(u) + ln 2 (Σp + Σr)) / 2, so 2 JSD = H(u) - a_p - a_r with
        # a = H(p) - ln 2 Σp per row: one pass over u (its entropy) and no pass to halve it.
        a = torch.special.entr(p).sum(-1).sub_(p.sum(-1), alpha=math.log(2))  # (LH, n)
        step = max(1, chunk_bytes // (lh * n * n * 8))
        for start in range(0, lh, step):
            stop = min(lh, start + step)
            u = p[start:stop, None] + p[None, start:]  # (c, LH - start, n, n)
            jsd = torch.special.entr(u, out=u).sum(-1)  # in place: no second chunk-sized temporary
            jsd.sub_(a[start:stop, None]).sub_(a[None, start:])  # (c, LH - start, n) 2 JSD in nats
            d = jsd.clamp_(min=0).div_(2 * math.log(2)).sqrt_().mean(-1)  # (c, LH - start)
            out[text, start:stop, start:] = d
            out[text, start:, start:stop] = d.T
            del u, jsd, d
    idx = torch.arange(lh)
    out[:, idx, idx] = 0.0  # rounding can leave ~1e-8 on the diagonal, where p = r exactly
    return out
