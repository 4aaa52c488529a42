"""Measures beyond raw attention weights: vector norms, attention flow and ALTI. Pure tensor math, no I/O.

The formulas and references are in ``definitions.MEASURES``. Shapes: L layers, H heads, T tokens,
D hidden size. ``fx[l, h, j]`` is f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h of layer l, a D-vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Capacities of the flow graph are scaled to integers by this factor (SciPy's max flow takes integers).
FLOW_SCALE = 1 << 22


def head_norms(attn: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """‖α^h_ij f_h(x_j)‖ = α^h_ij ‖f_h(x_j)‖ (α ≥ 0). attn: (L, H, T, T); fx: (L, H, T, D) -> (L, H, T, T)."""
    if attn.shape[:3] != fx.shape[:3]:
        raise ValueError(f"attn {tuple(attn.shape)} and fx {tuple(fx.shape)} do not match")
    out: torch.Tensor = attn * fx.norm(dim=-1).unsqueeze(-2)  # (L, H, T, T) * (L, H, 1, T)
    return out


def layer_norms(attn: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """‖Σ_h α^h_ij f_h(x_j)‖ per layer. attn: (L, H, T, T); fx: (L, H, T, D) -> (L, T, T).

    Through each key's Gram matrix of its H head vectors, G_j = f(x_j) f(x_j)ᵀ (H × H), so no (T, T, D)
    tensor is ever built: ‖Σ_h α_h f_h‖² = Σ_{h,g} α_h G_j[h, g] α_g.
    """
    if attn.shape[:3] != fx.shape[:3]:
        raise ValueError(f"attn {tuple(attn.shape)} and fx {tuple(fx.shape)} do not match")
    out = torch.empty((attn.shape[0], attn.shape[2], attn.shape[3]), dtype=torch.float32)  # (L, T, T)
    for layer in range(attn.shape[0]):
        a = attn[layer].double()  # (H, T, T)
        f = fx[layer].double()  # (H, T, D)
        gram = torch.einsum("hjd,gjd->jhg", f, f)  # (T, H, H)
        mixed = torch.einsum("hij,jhg->gij", a, gram)  # (H, T, T)
        out[layer] = (mixed * a).sum(0).clamp_(min=0).sqrt().float()  # (T, T)
    return out


def rollout_matrices(attn: torch.Tensor) -> np.ndarray:
    """(L, H, T, T) -> (L, T, T) float64: the rollout's Â_l (``definitions.ROLLOUT``), rows renormalised."""
    t = attn.shape[-1]
    a_hat = 0.5 * attn.double().mean(dim=1) + 0.5 * torch.eye(t, dtype=torch.float64)  # (L, T, T)
    return (a_hat / a_hat.sum(dim=-1, keepdim=True)).numpy()


#: Edges per ``maximum_flow`` call in ``flow`` (bounds the graph's memory: ~100 bytes an edge in SciPy).
_FLOW_CHUNK_EDGES = 1 << 21


def flow(attn: torch.Tensor) -> torch.Tensor:
    """Attention flow (Abnar & Zuidema 2020) after every layer. attn: (L, H, T, T) of all layers -> (L, T, T).

    Node (l, i) is token i after layer l (layer 0 = the input); the edge from (l+1, i) down to (l, j) has
    capacity Â_l[i, j]. ``flow[l, i, j]`` is the maximum flow from (l+1, i) to (0, j), each row divided by
    its sum, as ``compute_flows`` in the authors' code.

    After layer 0 the only path is the edge itself; after layer 1 the paths (2, i) → (1, k) → (0, j) share
    no edge, so the flow is Σ_k min(Â_1[i, k], Â_(layer 0)[k, j]). Deeper, the T² problems of one layer are solved
    by one SciPy ``maximum_flow`` call on their disjoint union (``_union_flows``), not T² calls.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must have shape (L, H, T, T), got {tuple(attn.shape)}")
    layers = attn.shape[0]
    a_hat = rollout_matrices(attn)  # (L, T, T) float64
    caps = np.rint(a_hat * FLOW_SCALE).astype(np.int32)  # (L, T, T) integer capacities for SciPy
    out = np.zeros(a_hat.shape, dtype=np.float64)  # (L, T, T)
    out[0] = a_hat[0]
    if layers > 1:
        out[1] = np.minimum(a_hat[1][:, :, None], a_hat[0][None, :, :]).sum(axis=1)  # (T, T, T) summed over k
    for layer in range(2, layers):
        out[layer] = _union_flows(caps[: layer + 1]) / FLOW_SCALE
    out /= np.maximum(out.sum(axis=-1, keepdims=True), 1e-30)
    return torch.from_numpy(out).float()


def _union_flows(caps: np.ndarray) -> np.ndarray:
    """Max flow from every (l+1, i) to every (0, j), l = len(caps) - 1 >= 2. caps: (l+1, T, T) int -> (T, T).

    Each (i, j) problem is a copy of the graph cut to what it can use: its source, the T nodes of layers
    l .. 1, and its sink (the other tokens of layers l+1 and 0 carry no flow from i to j). A super source
    feeds every copy's source and every copy's sink drains to a super sink, both with capacities no copy
    can fill (a source emits at most Σ_k Â_l[i, k] ≈ 1). The copies share no node, so a maximum flow of the
    union is a maximum flow of each copy, and copy (i, j)'s value is the flow on its super-source edge.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    depth = caps.shape[0] - 1  # l: middle layers l .. 1
    t = caps.shape[-1]
    per_copy = 2 + depth * t  # nodes: source 0, layer m token a at 1 + (l - m) * t + a, sink 1 + l * t
    a_idx, b_idx = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")  # (T, T) each
    mid_rows, mid_cols, mid_caps = [], [], []  # the edges every copy shares: layers l .. 2 down to l-1 .. 1
    for m in range(depth, 1, -1):
        mid_rows.append(1 + (depth - m) * t + a_idx.ravel())
        mid_cols.append(1 + (depth - m + 1) * t + b_idx.ravel())
        mid_caps.append(caps[m - 1].ravel())
    top = np.arange(t)  # source -> layer l, token k
    bottom = 1 + (depth - 1) * t + np.arange(t)  # layer 1, token k -> sink
    base_rows = np.concatenate([np.zeros(t, dtype=np.int64), *mid_rows, bottom])  # (E,)
    base_cols = np.concatenate([1 + top, *mid_cols, np.full(t, per_copy - 1)])  # (E,)
    shared = np.concatenate(mid_caps)  # ((l-1) T²,) depth >= 2: at least one middle layer
    edges = len(base_rows) + 2
    big = np.int32(2 * FLOW_SCALE)  # more than any copy's source can emit
    pairs = [(i, j) for i in range(t) for j in range(t)]
    out = np.zeros((t, t), dtype=np.float64)
    chunk = max(1, _FLOW_CHUNK_EDGES // edges)
    for start in range(0, len(pairs), chunk):
        batch = np.array(pairs[start : start + chunk])  # (C, 2): (i, j) of each copy
        c = len(batch)
        offset = 2 + per_copy * np.arange(c)  # (C,) first node of each copy; node 0 super source, 1 super sink
        middle = np.broadcast_to(shared, (c, len(shared)))  # (C, (l-1) T²)
        caps_copy = np.concatenate([caps[depth][batch[:, 0]], middle, caps[0][:, batch[:, 1]].T], axis=1)
        # (C, E): the source's row of Â_l, the shared middle, the sink's column of layer 0's Â
        rows = np.concatenate(
            [np.zeros(c, dtype=np.int64), offset + per_copy - 1, (offset[:, None] + base_rows).ravel()]
        )
        cols = np.concatenate([offset, np.ones(c, dtype=np.int64), (offset[:, None] + base_cols).ravel()])
        vals = np.concatenate([np.full(c, big), np.full(c, big), caps_copy.ravel()]).astype(np.int32)
        n = 2 + per_copy * c
        graph = csr_matrix((vals, (rows, cols)), shape=(n, n))
        graph.eliminate_zeros()  # a zero-capacity edge is no edge
        result = maximum_flow(graph, 0, 1)
        f = result.flow  # edge flows; row 0 holds the super source's edge into each copy
        lo, hi = f.indptr[0], f.indptr[1]
        got = np.zeros(n, dtype=np.float64)
        got[f.indices[lo:hi]] = f.data[lo:hi]
        out[batch[:, 0], batch[:, 1]] = got[offset]
    return out


@dataclass
class BlockInputs:
    """What ALTI needs of one post-LayerNorm attention block (BERT-style), for one input.

    x: (T, D) the layer's input; fx: (H, T, D) f_h(x_j) (value incl. bias, times the head's W_O rows);
    attn: (H, T, T); gamma: (D,) LayerNorm weight; sigma: (T,) the LayerNorm's √(var + eps) of each
    token's pre-norm vector; output: (T, D) the LayerNorm's output y.
    """

    x: torch.Tensor
    fx: torch.Tensor
    attn: torch.Tensor
    gamma: torch.Tensor
    sigma: torch.Tensor
    output: torch.Tensor


#: Query rows done at once in ``alti_layer``: bounds the (rows, T, D) temporary.
ALTI_CHUNK_ELEMENTS = 1 << 23


def alti_layer(block: BlockInputs) -> torch.Tensor:
    """ALTI contributions of one layer (Ferrando et al. 2022) -> (T, T), rows summing to 1.

    T_i(x_j) = γ ⊙ (z_ij − mean z_ij) / σ_i with z_ij = Σ_h α^h_ij f_h(x_j) + [i = j] x_i;
    c_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁), rows divided by their sums.
    """
    # float32 inside the (T, T, D) loop (half the memory traffic); sums of the L1 norms in float64.
    fx, attn = block.fx.float(), block.attn.float()  # (H, T, D), (H, T, T)
    _, t, d = fx.shape
    gamma = block.gamma.float()  # (D,)

    def centred(v: torch.Tensor) -> torch.Tensor:  # LayerNorm's linear part without the 1/σ
        return (v - v.mean(dim=-1, keepdim=True)) * gamma

    fx_c = centred(fx)  # (H, T, D): centring and γ are linear, so apply them to each f_h(x_j) once
    x_c = centred(block.x.float())  # (T, D)
    y = block.output.float()  # (T, D)
    sigma = block.sigma.float()  # (T,)
    y_l1 = y.double().abs().sum(-1)  # (T,)
    out = torch.empty((t, t), dtype=torch.float64)
    chunk = max(1, ALTI_CHUNK_ELEMENTS // max(1, t * d))
    for start in range(0, t, chunk):
        rows = slice(start, min(t, start + chunk))
        z = torch.einsum("hij,hjd->ijd", attn[:, rows], fx_c)  # (r, T, D)
        idx = torch.arange(rows.start, rows.stop)
        z[idx - start, idx] += x_c[rows]  # the residual: token i's own vector goes to j = i
        z /= sigma[rows, None, None]
        dist = (y[rows, None, :] - z).abs().sum(-1, dtype=torch.float64)  # (r, T) ‖y_i − T_i(x_j)‖₁
        out[rows] = (y_l1[rows, None] - dist).clamp(min=0)
    out /= out.sum(-1, keepdim=True).clamp(min=1e-30)
    return out.float()


def contribution_rollout(contrib: torch.Tensor) -> torch.Tensor:
    """(L, T, T) per-layer contributions -> (L, T, T): R_0 = C_0, R_l = C_l · R_{l−1}."""
    out = torch.empty_like(contrib, dtype=torch.float32)
    acc = contrib[0].double()  # (T, T)
    out[0] = acc.float()
    for layer in range(1, contrib.shape[0]):
        acc = contrib[layer].double() @ acc
        out[layer] = acc.float()
    return out
