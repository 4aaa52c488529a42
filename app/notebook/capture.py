"""Per-head attention weights of plain torch modules built on ``nn.MultiheadAttention``.

``capture_mha(module, inputs)`` runs ``module`` once with hooks on every ``nn.MultiheadAttention`` inside it
(the module itself may be one). A pre-hook asks each call for per-head weights (``need_weights=True,
average_attn_weights=False``); the forward hook keeps them and hands the caller what it asked for (the
head average, or None), so the module computes exactly what it computes without Headmap.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _bind(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "self"}


def capture_mha(module: nn.Module, inputs: Any, batch_index: int = 0) -> torch.Tensor:
    """Run ``module(inputs)`` and return the self-attention weights of each MHA call in call order.

    inputs: a tensor (passed as the one argument), a tuple/list (passed as positional arguments) or a
    dict (keyword arguments). Returns (calls, heads, T, T) float32 for item ``batch_index`` of the batch.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
    if not layers:
        raise TypeError(f"{type(module).__name__} contains no nn.MultiheadAttention")
    captured: list[torch.Tensor] = []  # each (B, nh, T, S) or (nh, T, S)
    asked: dict[int, tuple[bool, bool]] = {}  # id(module) -> the caller's (need_weights, average_attn_weights)

    def pre_hook(
        mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = _bind(mod, args, kwargs)
        asked[id(mod)] = (bool(call["need_weights"]), bool(call["average_attn_weights"]))
        call["need_weights"], call["average_attn_weights"] = True, False
        return (), call

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        out, weights = output  # weights: (B, nh, T, S) or unbatched (nh, T, S)
        captured.append(weights.detach())
        need, average = asked.pop(id(mod))
        if not need:
            return out, None
        return out, weights.mean(dim=-3) if average else weights

    handles = []
    try:
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(layer.register_forward_hook(hook, with_kwargs=True))
        with torch.inference_mode():
            if isinstance(inputs, dict):
                module(**inputs)
            elif isinstance(inputs, tuple | list):
                module(*inputs)
            else:
                module(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise ValueError(f"{type(module).__name__} ran without calling its nn.MultiheadAttention")
    out = []
    for i, weights in enumerate(captured):
        if weights.dim() == 4:  # (B, nh, T, S)
            if not 0 <= batch_index < weights.shape[0]:
                raise ValueError(f"batch_index {batch_index} is out of range for a batch of {weights.shape[0]}")
            weights = weights[batch_index]  # (nh, T, S)
        if weights.shape[-1] != weights.shape[-2]:
            raise ValueError(
                f"attention call {i} attends {weights.shape[-2]} queries to {weights.shape[-1]} keys; "
                "Headmap shows self-attention (T x T) only"
            )
        out.append(weights.to(torch.float32))
    shapes = {tuple(w.shape) for w in out}
    if len(shapes) != 1:
        raise ValueError(f"the attention calls have different shapes: {sorted(shapes)}")
    return torch.stack(out).contiguous()  # (calls, nh, T, T)
