"""A model's inside, read with forward hooks: each layer's input, value vectors, attention and LayerNorm.

What the norm-based measure and ALTI need beyond the weights (``attention.measures``).

- ``capture`` (norms and ALTI): post-LayerNorm BERT-style encoders whose layers are ``encoder.layer[i]``
  with ``attention.self.value``, ``attention.self`` returning the weights, and ``attention.output.dense`` +
  ``attention.output.LayerNorm`` (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM ...).
- ``capture_values`` (norms only): those, and the LLM families whose layers are ``layers[i].self_attn`` with
  ``v_proj`` (or Phi-3's fused ``qkv_proj``) and ``o_proj`` (Llama, Qwen2, Mistral, Gemma 2, Phi-3 ...),
  with grouped-query attention: query head h reads the value head h // (H / H_kv), as ``repeat_kv`` does.
  ALTI is not offered for them: it decomposes a post-LayerNorm block, and theirs are pre-LayerNorm.

Hooks are registered for one forward pass and removed; they record only calls made from the capturing
thread, so a batch another thread runs meanwhile on the same model is not mixed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import capture as capture_mod
from .engine import Encoded, Engine
from .hf import HFEngine

#: What ``capture`` can read, in words, for error messages.
SUPPORTED = "BERT-style encoders (bert, roberta, xlm-roberta, electra, ... with encoder.layer[i].attention.self.value)"
#: What ``capture_values`` can read besides, in words.
SUPPORTED_VALUES = (
    "decoder LLMs with layers[i].self_attn.v_proj (or qkv_proj) and o_proj (llama, qwen2, mistral, gemma2, phi3, ...)"
)


@dataclass
class LayerInternals:
    """One layer of one input. T tokens, D hidden size, H heads, d = D / H."""

    x: torch.Tensor  # (T, D) the layer's input
    values: torch.Tensor  # (H, T, d) x W_V + b_V split into heads
    attn: torch.Tensor  # (H, T, T) attention weights
    w_o: torch.Tensor  # (H, d, D) the output projection's rows per head: f_h(x) = v_h(x) @ w_o[h]
    pre_norm: torch.Tensor  # (T, D) x + attention output + b_O, the LayerNorm's input
    output: torch.Tensor  # (T, D) the LayerNorm's output
    gamma: torch.Tensor  # (D,)
    eps: float

    @property
    def fx(self) -> torch.Tensor:
        """(H, T, D): f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h."""
        return torch.einsum("htd,hdk->htk", self.values, self.w_o)

    @property
    def sigma(self) -> torch.Tensor:
        """(T,): the LayerNorm's √(var + eps) of each token."""
        return (self.pre_norm.var(dim=-1, unbiased=False) + self.eps).sqrt()


def _layers(engine: Engine) -> list[nn.Module] | None:
    """The engine's BERT-style layers, or None when it has none (custom block, GPT-2, DistilBERT ...)."""
    if not isinstance(engine, HFEngine) or engine.model is None:
        return None
    layers = getattr(getattr(engine.model, "encoder", None), "layer", None)
    if layers is None or len(layers) != engine.num_layers:
        return None
    for layer in layers:
        att = getattr(layer, "attention", None)
        out = getattr(att, "output", None)
        if not all(
            isinstance(m, nn.Module)
            for m in (
                getattr(getattr(att, "self", None), "value", None),
                getattr(out, "dense", None),
                getattr(out, "LayerNorm", None),
            )
        ):
            return None
    return list(layers)


def supports(engine: Engine, measure: str = "alti") -> bool:
    """Whether this engine's internals can be read for ``measure`` (``norms``: ``capture_values``; else ``capture``)."""
    if _layers(engine) is not None and engine.kind == "encoder":
        return True
    return measure == "norms" and _llm_layers(engine) is not None


def supported_for(measure: str) -> str:
    """The model families ``measure`` works for, in words (for the 422)."""
    return f"{SUPPORTED}; {SUPPORTED_VALUES}" if measure == "norms" else SUPPORTED


@dataclass
class HeadValues:
    """What the norm-based measure needs of one layer of one input. T tokens, D hidden size, H query heads."""

    values: torch.Tensor  # (H, T, d) x W_V + b_V of each query head's value head
    attn: torch.Tensor  # (H, T, T) attention weights
    w_o: torch.Tensor  # (H, d, D) the output projection's rows per query head

    @property
    def fx(self) -> torch.Tensor:
        """(H, T, D): f_h(x_j) = (x_j W_V^g(h) + b_V^g(h)) W_O^h, g(h) the query head's value head."""
        return torch.einsum("htd,hdk->htk", self.values, self.w_o)


def _llm_layers(engine: Engine) -> list[nn.Module] | None:
    """The attention modules (``self_attn``) of a decoder LLM's layers, or None when it has none."""
    if not isinstance(engine, HFEngine) or engine.model is None:
        return None
    base = engine.model
    layers = getattr(base, "layers", None)
    if layers is None:  # a ...ForCausalLM wrapper: the decoder is .model
        layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None or len(layers) != engine.num_layers:
        return None
    out: list[nn.Module] = []
    for layer in layers:
        att = getattr(layer, "self_attn", None)
        if not isinstance(_value_proj(att), nn.Linear) or not isinstance(getattr(att, "o_proj", None), nn.Linear):
            return None
        assert isinstance(att, nn.Module)
        out.append(att)
    return out


def _value_proj(att: Any) -> Any:
    """The layer's value projection: ``v_proj``, or Phi-3's fused ``qkv_proj`` (None when neither)."""
    value = getattr(att, "v_proj", None)
    return value if value is not None else getattr(att, "qkv_proj", None)


def _weights(engine: HFEngine, kwargs: dict[str, torch.Tensor], t: int) -> list[torch.Tensor]:
    """Every layer's (H, T, T) attention weights of one input, running the model once (hooks already set)."""
    if engine.capture:  # the SDPA path returns no weights: they come from the captured q and k
        with capture_mod.recording() as rec:
            engine.model(**kwargs)
        captured = rec.split([t])[0]
        return [captured.weights(i) for i in range(engine.num_layers)]
    attentions = engine.model(**kwargs, output_attentions=True).attentions  # L x (1, H, T, T)
    if attentions is None or any(a is None for a in attentions):
        raise ValueError(f"{engine.name}: the model returned no attention weights (not eager attention?)")
    return [a[0] for a in attentions]


def capture_values(engine: Engine, enc: Encoded) -> list[HeadValues]:
    """Run ``enc`` alone through ``engine``; every layer's value vectors, weights and W_O rows (blocking).

    Raises ValueError when the engine supports neither ``capture`` nor the LLM layout (see ``supports``).
    """
    if _layers(engine) is not None and engine.kind == "encoder":
        return [HeadValues(lay.values, lay.attn, lay.w_o) for lay in capture(engine, enc)]
    layers = _llm_layers(engine)
    if layers is None:
        raise ValueError(f"{engine.name} is not one of: {supported_for('norms')}")
    assert isinstance(engine, HFEngine)
    me = threading.get_ident()
    seen: dict[int, torch.Tensor] = {}

    def keep(index: int):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if threading.get_ident() == me:
                seen[index] = output.detach()

        return hook

    handles = [_value_proj(att).register_forward_hook(keep(i)) for i, att in enumerate(layers)]
    ids = torch.tensor([enc.input_ids])  # (1, T)
    t = len(enc)
    kwargs = engine._inputs(ids, torch.ones_like(ids), torch.tensor([enc.token_type_ids or [0] * t]))
    try:
        with torch.inference_mode():
            weights = _weights(engine, kwargs, t)  # L x (H, T, T)
    finally:
        for handle in handles:
            handle.remove()
    out: list[HeadValues] = []
    nh, nkv = engine.num_heads, engine.num_kv_heads or engine.num_heads
    for i, att in enumerate(layers):
        d_head = int(getattr(att, "head_dim", 0) or engine.head_dim)
        projected = seen[i][0]  # (T, Hkv*d) from v_proj, or (T, (H + 2 Hkv) * d) from qkv_proj
        values = projected[:, -nkv * d_head :]  # Phi-3's qkv_proj holds q, k, v in that order
        values = values.reshape(t, nkv, d_head).transpose(0, 1).float()  # (Hkv, T, d)
        values = values.repeat_interleave(nh // nkv, dim=0)  # (H, T, d): query head h reads value head h // group
        o_proj: Any = att.o_proj
        w_o = o_proj.weight.detach().float()  # (D, H*d): y = v @ W^T
        out.append(HeadValues(values, weights[i].float(), w_o.T.reshape(nh, d_head, -1)))  # w_o (H, d, D)
    return out


def capture(engine: Engine, enc: Encoded) -> list[LayerInternals]:
    """Run ``enc`` alone through ``engine`` and return every layer's internals (blocking: a worker thread).

    Raises ValueError when the engine is not supported (see ``supports``).
    """
    layers = _layers(engine)
    if layers is None or engine.kind != "encoder":
        raise ValueError(f"{engine.name} is not one of: {SUPPORTED}")
    assert isinstance(engine, HFEngine)
    me = threading.get_ident()
    seen: dict[tuple[int, str], Any] = {}

    def keep(index: int, what: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if threading.get_ident() == me:
                seen[index, what] = (args[0].detach(), output)

        return hook

    handles = []
    for i, layer in enumerate(layers):
        att: Any = layer.attention
        handles.append(att.self.value.register_forward_hook(keep(i, "value")))
        handles.append(att.self.register_forward_hook(keep(i, "self")))
        handles.append(att.output.LayerNorm.register_forward_hook(keep(i, "norm")))
    ids = torch.tensor([enc.input_ids])  # (1, T)
    kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if engine.uses_token_types:
        kwargs["token_type_ids"] = torch.tensor([enc.token_type_ids or [0] * len(enc)])
    captured = None
    try:
        with torch.inference_mode():
            if engine.capture:  # the SDPA path returns no weights: they come from the captured q and k
                with capture_mod.recording() as rec:
                    engine.model(**kwargs)
                captured = rec.split([len(enc)])[0]
            else:
                engine.model(**kwargs, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    out: list[LayerInternals] = []
    nh = engine.num_heads
    for i, layer in enumerate(layers):
        att = layer.attention
        x, values = seen[i, "value"]  # (1, T, D), (1, T, D)
        _, self_out = seen[i, "self"]  # (attn_output, attn_weights (1, H, T, T))
        pre_norm, normed = seen[i, "norm"]  # (1, T, D) each
        weights: torch.Tensor | None
        if captured is not None:
            weights = captured.weights(i).unsqueeze(0)  # (1, H, T, T)
        else:
            weights = self_out[1] if isinstance(self_out, tuple) and len(self_out) > 1 else None
        if weights is None:
            raise ValueError(f"{engine.name}: layer {i} returned no attention weights (not eager attention?)")
        t, d_model = x.shape[1], x.shape[2]
        d_head = values.shape[-1] // nh
        w_o = att.output.dense.weight.detach()  # (D, H*d): y = v @ W^T
        out.append(
            LayerInternals(
                x=x[0].float(),
                values=values[0].view(t, nh, d_head).transpose(0, 1).float(),  # (H, T, d)
                attn=weights[0].float(),
                w_o=w_o.T.reshape(nh, d_head, d_model).float(),  # (H, d, D)
                pre_norm=pre_norm[0].float(),
                output=normed[0].float(),
                gamma=att.output.LayerNorm.weight.detach().float(),
                eps=float(att.output.LayerNorm.eps),
            )
        )
    return out
