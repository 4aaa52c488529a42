"""Turn attention tensors into response bytes fast.

``json``: weights rounded to ``JSON_DECIMALS`` places as float32, written by orjson straight from the
NumPy buffer (about 7 bytes a weight instead of ~20 for ``json.dumps(tensor.tolist())``).
``compact``: weights quantised to uint8 levels (byte / 255) and base64-encoded: 1.33 bytes a weight.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson
import torch

from app.schemas import COMPACT_LEVELS, JSON_DECIMALS


def round_for_json(attn: torch.Tensor, inplace: bool = False) -> np.ndarray:
    """(..., T, T) float tensor -> float32 C-contiguous array rounded to ``JSON_DECIMALS`` places.

    ``inplace`` rounds ``attn`` itself (when it is float32), sparing a copy of up to 75 MB at 512 tokens.
    """
    with torch.inference_mode():  # forward passes return inference tensors; in-place needs this mode
        attn = attn.float()
        attn = attn.round_(decimals=JSON_DECIMALS) if inplace else torch.round(attn, decimals=JSON_DECIMALS)
        return np.ascontiguousarray(attn.numpy())


def quantise(attn: torch.Tensor) -> np.ndarray:
    """(..., T, T) weights in [0, 1] -> uint8 levels; weight ~= level / 255, error <= 1/510.

    ``w * 255 + 0.5`` truncated is round-half-up for w >= 0; two passes instead of four.
    """
    levels = attn.float().mul(COMPACT_LEVELS).add_(0.5).clamp_(max=COMPACT_LEVELS).to(torch.uint8)
    return np.ascontiguousarray(levels.numpy())


def compact_tensor(attn: torch.Tensor) -> dict[str, Any]:
    """The ``CompactTensor`` schema for ``attn`` of shape (L, H, T, T)."""
    levels = quantise(attn)
    return {
        "dtype": "uint8",
        "shape": list(levels.shape),
        "scale": 1.0 / COMPACT_LEVELS,
        "data": binascii.b2a_base64(levels.data, newline=False).decode("ascii"),
    }


def dumps(payload: dict[str, Any]) -> bytes:
    """Serialise a response dict whose arrays may be NumPy arrays."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def dequantise(data: dict[str, Any]) -> np.ndarray:
    """Inverse of ``compact_tensor`` (for clients and tests): float32 array of ``data['shape']``."""
    raw = np.frombuffer(base64.b64decode(data["data"]), dtype=np.uint8)
    return (raw.astype(np.float32) * np.float32(data["scale"])).reshape(data["shape"])
