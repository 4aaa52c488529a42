"""The textbook self-attention block: MultiheadAttention -> residual add -> LayerNorm -> Linear.

It runs on top of minilm's tokenizer and embedding layer. By default its attention projections are
copied from minilm's first attention layer, so its heads reproduce minilm's layer-0 heads exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class BlockTrace:
    """Every intermediate of one forward pass, for the step-by-step explainer.

    B = batch, T = tokens, E = embed size, nh = heads, hd = E // nh.
    """

    embeddings: torch.Tensor  # (B, T, E) input to the block
    q: torch.Tensor  # (B, nh, T, hd) queries  = x W_q^T + b_q, split into heads
    k: torch.Tensor  # (B, nh, T, hd) keys
    v: torch.Tensor  # (B, nh, T, hd) values
    scores: torch.Tensor  # (B, nh, T, T) Q K^T / sqrt(hd), plus the padding mask
    weights: torch.Tensor  # (B, nh, T, T) softmax(scores) over keys
    context: torch.Tensor  # (B, T, E) heads' weighted sums of V, concatenated, then out_proj
    residual: torch.Tensor  # (B, T, E) embeddings + context
    normed: torch.Tensor  # (B, T, E) LayerNorm(residual)
    output: torch.Tensor  # (B, T, E) Linear(normed)


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` + residual + ``LayerNorm`` + ``Linear``, returning per-head weights."""

    def __init__(self, embed_size: int, num_heads: int) -> None:
        super().__init__()
        if embed_size % num_heads:
            raise ValueError(f"embed_size {embed_size} is not divisible by num_heads {num_heads}")
        self.embed_size = embed_size
        self.num_heads = num_heads
        self.attention = nn.MultiheadAttention(embed_size, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(embed_size)
        self.linear = nn.Linear(embed_size, embed_size)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, E); key_padding_mask: (B, T) True where padding.

        Returns (output (B, T, E), weights (B, nh, T, T)).
        """
        if x.dim() != 3 or x.shape[-1] != self.embed_size:
            raise ValueError(f"expected input (B, T, {self.embed_size}), got {tuple(x.shape)}")
        context, weights = self.attention(
            x, x, x, key_padding_mask=key_padding_mask, need_weights=True, average_attn_weights=False
        )  # (B, T, E), (B, nh, T, T)
        out = self.linear(self.norm(x + context))  # (B, T, E)
        return out, weights

    def trace(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> BlockTrace:
        """The same forward pass written out step by step from the block's own parameters."""
        b, t, e = x.shape
        nh, hd = self.num_heads, e // self.num_heads
        w_q, w_k, w_v = self.attention.in_proj_weight.chunk(3)  # each (E, E)
        b_q, b_k, b_v = self.attention.in_proj_bias.chunk(3)  # each (E,)

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, nh, hd).transpose(1, 2)  # (B, T, E) -> (B, nh, T, hd)

        q, k, v = heads(x @ w_q.T + b_q), heads(x @ w_k.T + b_k), heads(x @ w_v.T + b_v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)  # (B, nh, T, T)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, nh, T, T)
        mixed = (weights @ v).transpose(1, 2).reshape(b, t, e)  # (B, T, E)
        context = self.attention.out_proj(mixed)  # (B, T, E)
        residual = x + context
        normed = self.norm(residual)
        return BlockTrace(x, q, k, v, scores, weights, context, residual, normed, self.linear(normed))


def init_from_bert_layer(block: SelfAttention, bert_attention: Any) -> None:
    """Copy Q/K/V/output projections (and the output LayerNorm) of a BERT ``BertAttention`` into ``block``."""
    self_attn, out = bert_attention.self, bert_attention.output
    with torch.no_grad():
        block.attention.in_proj_weight.copy_(
            torch.cat([self_attn.query.weight, self_attn.key.weight, self_attn.value.weight])  # (3E, E)
        )
        block.attention.in_proj_bias.copy_(torch.cat([self_attn.query.bias, self_attn.key.bias, self_attn.value.bias]))
        block.attention.out_proj.weight.copy_(out.dense.weight)
        block.attention.out_proj.bias.copy_(out.dense.bias)
        block.norm.weight.copy_(out.LayerNorm.weight)
        block.norm.bias.copy_(out.LayerNorm.bias)
        block.norm.eps = out.LayerNorm.eps


def init_random(block: SelfAttention, seed: int) -> None:
    """Reproducible random weights: the same seed gives the same block on every machine."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in block.parameters():
            if param.dim() > 1:
                bound = math.sqrt(6.0 / (param.shape[0] + param.shape[1]))  # Xavier-uniform
                param.copy_(torch.rand(param.shape, generator=gen) * 2 * bound - bound)
            else:
                param.zero_()
        block.norm.weight.fill_(1.0)


def load_checkpoint(block: SelfAttention, path: Path) -> None:
    """Load a ``state_dict`` saved with ``torch.save(block.state_dict(), path)``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    block.load_state_dict(state)
