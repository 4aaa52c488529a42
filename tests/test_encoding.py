"""Response encodings: chunked JSON equals one-shot JSON; compact levels round-trip."""

from __future__ import annotations

import json

import numpy as np
import orjson
import torch

from app.encoding import CHUNKED_ABOVE, compact_tensor, dequantise, dumps, quantise, round_for_json


def test_chunked_json_equals_one_shot() -> None:
    gen = torch.Generator().manual_seed(0)
    attn = torch.rand((3, 4, 300, 300), generator=gen).softmax(-1)  # (L, H, T, T), above the threshold
    assert attn.numel() > CHUNKED_ABOVE
    payload = {"model": "m", "tokens": ["a"] * 300, "attention": round_for_json(attn), "truncated": False}
    chunked = dumps(payload)
    assert isinstance(chunked, memoryview)
    one_shot = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    assert json.loads(bytes(chunked)) == json.loads(one_shot)


def test_json_rounding_is_within_half_a_unit() -> None:
    attn = torch.rand((2, 2, 5, 5)).softmax(-1)
    rounded = round_for_json(attn)
    assert np.abs(rounded - attn.numpy()).max() <= 5e-5 + 1e-7
    assert len(orjson.dumps(rounded, option=orjson.OPT_SERIALIZE_NUMPY)) / attn.numel() <= 8


def test_compact_levels() -> None:
    attn = torch.tensor([[[[0.0, 1 / 510 - 1e-6, 1 / 510 + 1e-6, 0.5, 1.0]]]])  # (1, 1, 1, 5)
    assert quantise(attn).ravel().tolist() == [0, 0, 1, 128, 255]
    packed = compact_tensor(attn)
    assert packed["shape"] == [1, 1, 1, 5]
    assert np.abs(dequantise(packed) - attn.numpy()).max() <= 1 / 510 + 1e-6
