"""Engines from objects already in memory: a transformers model + tokenizer (notebooks, scripts).

``engine_from_model`` is the one entry point the notebook API uses, so whatever ``HFEngine`` does to
capture attention (``output_attentions`` today, transformers' AttentionInterface later) applies here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .hf import HFEngine, engine_of


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
    label = name or Path(str(getattr(config, "_name_or_path", "") or config.model_type)).name  # hub id or folder
    return engine_of(str(label), model, tokenizer, source="memory", capture=False)  # the user's model stays eager
