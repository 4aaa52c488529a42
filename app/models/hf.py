"""Hugging Face models (any ``AutoModel`` folder) as attention engines.

A model whose attention routes through transformers' ``AttentionInterface`` runs its SDPA path with the
capture (``capture.py``): each item comes back as a ``Captured`` state and only the layers and heads a
request asks for are ever computed. Other models run eagerly with ``output_attentions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import capture
from .engine import Attention, Encoded, Engine, Kind

log = logging.getLogger("headmap")


@dataclass(kw_only=True)
class HFEngine(Engine):
    """A Hugging Face ``AutoModel``: captured q/k on its SDPA path when ``capture``, else eager attention."""

    model: Any
    uses_token_types: bool
    capture: bool = False

    def _inputs(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> dict[str, torch.Tensor]:
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types:
            kwargs["token_type_ids"] = types
        return kwargs

    def run(self, batch: list[Encoded]) -> list[Attention]:
        """Each item's ``Captured`` state (capture models), else the dense eager attention."""
        if not self.capture or not batch:
            return super().run(batch)
        ids, mask, types = self.pad(batch)  # each (B, T)
        with torch.inference_mode(), capture.recording() as rec:
            self.model(**self._inputs(ids, mask, types))
        if len(rec.calls) != self.num_layers:
            raise RuntimeError(f"{self.name}: captured {len(rec.calls)} attention calls, expected {self.num_layers}")
        return list(rec.split([len(e) for e in batch]))

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        kwargs = self._inputs(ids, mask, types)
        if self.capture:  # the SDPA path returns no weights: computed from the captured q and k, padding included
            with capture.recording() as rec:
                self.model(**kwargs)
            # (L, B, H, T, T): one batched softmax per layer with the layer's own mask, padding included
            return torch.stack([rec.dense(i) for i in range(len(rec.calls))])
        layers: list[torch.Tensor | None] = list(self.model(**kwargs, output_attentions=True).attentions)
        # Stack layer by layer, letting go of each source as it is copied: torch.stack would hold the
        # model's L tensors and the stacked copy at once (150 MB instead of 88 MB at 512 tokens).
        first = layers[0]
        assert first is not None
        stacked = torch.empty((len(layers), *first.shape), dtype=first.dtype)  # (L, B, H, T, T)
        for i, layer in enumerate(layers):  # layers: L x (B, H, T, T)
            assert layer is not None
            stacked[i].copy_(layer)
            layers[i] = layer = None
        return stacked


def enable_capture(model: Any, uses_token_types: bool) -> bool:
    """Switch ``model`` to the capture if its attention routes through ``AttentionInterface``; True if it did.

    A probe (two short inputs, one padded) must give eager ``output_attentions`` on every layer (to 1e-4
    in float32; half precision rounds eager's own matmul, so 2e-2 there), otherwise the model stays
    eager. ``model`` is left with eager or capture attention.
    """
    if not getattr(model, "is_backend_compatible", lambda: False)():
        return False
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8:
        return False
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 0, 0]])  # (2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # (2, 6)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    atol = 1e-4 if model.dtype == torch.float32 else 2e-2
    if uses_token_types:
        kwargs["token_type_ids"] = torch.zeros_like(ids)
    try:
        with torch.inference_mode():
            eager = model(**kwargs, output_attentions=True).attentions  # L x (2, H, 6, 6)
            capture.register()
            model.set_attn_implementation(capture.CAPTURE)
            if model.config._attn_implementation != capture.CAPTURE:
                return False
            with capture.recording() as rec:
                model(**kwargs)
            items = rec.split([6, 4])
            ok = len(eager) == len(rec.calls) and all(
                torch.allclose(item.weights(layer), eager[layer][i, :, :n, :n].float(), atol=atol, rtol=0)
                for i, (item, n) in enumerate(zip(items, (6, 4), strict=True))
                for layer in range(len(eager))
            )
    except Exception:  # any failure of the capture path means: stay eager
        log.warning("%s: attention capture failed, using eager attention", type(model).__name__, exc_info=True)
        ok = False
    if not ok:
        model.set_attn_implementation("eager")
    return ok


def _kind(config: Any) -> Kind:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    mt = config.model_type
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def _can_predict(config: Any) -> bool:
    """Whether the checkpoint's architecture has a masked-LM or causal-LM head (``config.architectures``)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    heads = {
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type),
        MODEL_FOR_MASKED_LM_MAPPING_NAMES.get(config.model_type),
    }
    return bool(set(getattr(config, "architectures", None) or []) & (heads - {None}))


def _model_max_tokens(config: Any, tokenizer: Any) -> int:
    limits = []
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style position ids start after the padding index.
            offset = (config.pad_token_id + 1) if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
            limits.append(value - offset)
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    return min(limits) if limits else 512


def load_hf(
    name: str,
    path: Path,
    description: str | None = None,
    *,
    dtype: str = "float32",
    source: str | None = None,
) -> HFEngine:
    """Load a local Hugging Face model folder (no network, no remote code) as an attention engine."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a progress bar is noise in a server log
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    model = AutoModel.from_pretrained(
        path, local_files_only=True, trust_remote_code=False, attn_implementation="eager", dtype=getattr(torch, dtype)
    ).eval()
    return engine_of(name, model, tokenizer, description=description, source=source or path.name)


def engine_of(
    name: str, model: Any, tokenizer: Any, *, description: str | None = None, source: str, capture: bool = True
) -> HFEngine:
    """An ``HFEngine`` over a loaded model and its fast tokenizer, with the facts ``/api/models`` reports.

    ``capture``: switch the model to the attention capture when it supports it (``enable_capture``). A model
    the caller owns (notebooks) is left on eager attention, so its own ``output_attentions`` keeps working."""
    config = model.config
    kind = _kind(config)
    layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or int(config.hidden_size) // heads)
    gqa = f" ({kv_heads} key/value heads)" if kv_heads != heads else ""
    return HFEngine(
        name=name,
        kind=kind,
        description=description or f"{config.model_type} {kind} from {source}: {layers} layers x {heads} heads{gqa}",
        num_layers=layers,
        num_heads=heads,
        max_tokens=_model_max_tokens(config, tokenizer),
        tokenizer=tokenizer,
        family=str(config.model_type),
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        num_parameters=sum(p.numel() for p in model.parameters()),
        can_predict=_can_predict(config),
        source=source,
        model=model,
        uses_token_types=(types := "token_type_ids" in tokenizer.model_input_names),
        capture=enable_capture(model, types) if capture else False,
    )
