"""The textbook block as an engine: minilm's embeddings feeding ``SelfAttention`` (one layer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .engine import Engine
from .hf import HFEngine
from .textbook import SelfAttention, init_from_bert_layer, init_random, load_checkpoint


@dataclass(kw_only=True)
class CustomEngine(Engine):
    """minilm's embeddings feeding the textbook ``SelfAttention`` block (one layer)."""

    embeddings: nn.Module
    block: SelfAttention

    def embed(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E): token + position + segment embeddings, LayerNorm (as BERT's layer 0 sees)."""
        x: torch.Tensor = self.embeddings(input_ids=ids, token_type_ids=types)
        return x

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids, types)  # (B, T, E)
        weights: torch.Tensor
        _, weights = self.block(x, key_padding_mask=mask == 0)  # (B, nh, T, T)
        return weights.unsqueeze(0)  # (1, B, nh, T, T)


def make_custom(
    name: str,
    base: HFEngine,
    init: Literal["minilm", "random", "checkpoint"],
    seed: int = 0,
    checkpoint: Path | None = None,
) -> CustomEngine:
    """Build the custom block over ``base``'s tokenizer and embedding layer (a BERT model)."""
    config = base.model.config
    block = SelfAttention(int(config.hidden_size), int(config.num_attention_heads)).eval()
    if init == "minilm":
        init_from_bert_layer(block, base.model.encoder.layer[0].attention)
        how = f"Q/K/V/out copied from {base.name} layer 0, so its heads equal {base.name}'s layer-0 heads"
    elif init == "random":
        init_random(block, seed)
        how = f"random weights, seed {seed}"
    else:
        if checkpoint is None:
            raise ValueError("custom_init=checkpoint needs HEADMAP_CUSTOM_CHECKPOINT")
        load_checkpoint(block, checkpoint)
        how = f"weights from {checkpoint.name}"
    return CustomEngine(
        name=name,
        kind="custom",
        description=(
            f"Textbook block: MultiheadAttention({block.embed_size}, {block.num_heads}) -> residual -> LayerNorm "
            f"-> Linear, on {base.name}'s embeddings; {how}"
        ),
        num_layers=1,
        num_heads=block.num_heads,
        max_tokens=base.max_tokens,
        tokenizer=base.tokenizer,
        family="textbook",
        num_kv_heads=block.num_heads,
        head_dim=block.embed_size // block.num_heads,
        dtype="float32",
        num_parameters=sum(p.numel() for p in [*base.model.embeddings.parameters(), *block.parameters()]),
        can_predict=False,
        source=f"built-in, on {base.name}'s embeddings",
        _tok_lock=base._tok_lock,  # one tokenizer object, so one lock
        embeddings=base.model.embeddings,
        block=block,
    )
