"""Engines from objects already in memory: a transformers model + tokenizer (notebooks, scripts).

``engine_from_model`` is the one entry point the notebook API uses, so whatever ``HFEngine`` does to
capture attention (``output_attentions`` today, transformers' AttentionInterface later) applies here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine import Kind
from .hf import HFEngine, _is_decoder, _model_max_tokens


def engine_from_model(model: Any, tokenizer: Any, name: str | None = None) -> HFEngine:
    """Wrap a loaded ``transformers`` model and its fast tokenizer as an ``HFEngine`` (no copy, no loading).

    The model is put in eval mode. Models loaded with SDPA or flash attention return no weights; they are
    switched to eager attention (the same numbers, softmax written out), as ``load_hf`` loads them.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        raise TypeError(f"{type(model).__name__} is not a transformers model (no config.num_hidden_layers)")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; Headmap needs character offsets "
            "(load it with AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    if getattr(config, "_attn_implementation", "eager") != "eager":
        setter = getattr(model, "set_attn_implementation", None)
        if callable(setter):
            setter("eager")
        else:  # older transformers: the config field is what the attention layers read
            config._attn_implementation = "eager"
    model.eval()
    kind: Kind = "decoder" if _is_decoder(config) else "encoder"
    layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    label = name or Path(str(getattr(config, "_name_or_path", "") or config.model_type)).name  # hub id or folder
    return HFEngine(
        name=str(label),
        kind=kind,
        description=f"{config.model_type} {kind}: {layers} layers x {heads} heads",
        num_layers=layers,
        num_heads=heads,
        max_tokens=_model_max_tokens(config, tokenizer),
        tokenizer=tokenizer,
        model=model,
        uses_token_types="token_type_ids" in tokenizer.model_input_names,
    )
