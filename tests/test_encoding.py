"""Response encodings: table-written JSON against NumPy rounding; compact levels round-trip."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import torch

from headmap.serving.encoding import (
    CompactWeights,
    Weights,
    compact_tensor,
    dequantise,
    dumps,
    quantise,
    round_for_json,
)


def _check_weights_json(attn: torch.Tensor) -> None:
    """``dumps`` of ``Weights(attn)`` parses back to ``attn`` rounded to 4 places (float64 NumPy reference)."""
    body = bytes(dumps({"model": "m", "attention": Weights(attn), "truncated": False}))
    parsed = json.loads(body)
    assert parsed["model"] == "m" and parsed["truncated"] is False
    got = np.array(parsed["attention"], dtype=np.float64)
    exact = attn.double().numpy()
    assert got.shape == exact.shape
    ref = np.round(exact, 4)
    # Only exact ties (x * 1e4 ending in .5 within float32 error) may round the other way.
    off = got != ref
    assert np.all(np.abs(np.abs(exact[off] * 1e4 % 1) - 0.5) < 1e-3), exact[off][:5]
    assert np.abs(got - exact).max() <= 5e-5 + 1e-7


def test_weights_json_matches_numpy_rounding() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 1, 1), (2, 3, 7, 7), (3, 4, 300, 300), (6, 12, 33, 33), (4, 5), (2, 2, 2, 3, 4)]:
        _check_weights_json((torch.randn(shape, generator=gen) * 4).softmax(-1))
    edge = torch.tensor([[0.0, 1.0, 0.5, 0.99995, 0.00004999, -1e-9, 1.0000001, 0.12345678]])  # (1, 8)
    body = json.loads(bytes(dumps({"attention": Weights(edge)})))
    assert body["attention"] == [[0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.1235]]


def test_weights_json_of_a_strided_batch_view() -> None:
    """The engine hands out (L, H, T, T) views into a padded (L, B, H, T_max, T_max) batch."""
    batch = torch.rand((2, 3, 4, 9, 9)).softmax(-1)
    view = batch[:, 1, :, :6, :6]
    assert not view.is_contiguous()
    assert bytes(dumps({"attention": Weights(view)})) == bytes(dumps({"attention": Weights(view.contiguous())}))
    _check_weights_json(view)


def test_weights_json_rejects_nan() -> None:
    attn = torch.full((1, 1, 2, 2), 0.5)
    attn[0, 0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dumps({"attention": Weights(attn)})


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


def test_compact_weights_write_the_compact_tensor() -> None:
    attn = torch.rand((2, 3, 6, 6)).softmax(-1)
    body = json.loads(bytes(dumps({"model": "m", "attention": None, "attention_compact": CompactWeights(attn)})))
    assert body["attention_compact"] == compact_tensor(attn)
    assert body["model"] == "m" and body["attention"] is None
    assert np.abs(dequantise(body["attention_compact"]) - attn.numpy()).max() <= 1 / 510 + 1e-6


def test_dumps_splices_several_values_and_empty_weights() -> None:
    attn = torch.rand((1, 2, 3, 3)).softmax(-1)
    empty = torch.zeros((1, 2, 0, 0))
    body = json.loads(bytes(dumps({"a": Weights(attn), "b": CompactWeights(attn), "c": Weights(empty)})))
    assert set(body) == {"a", "b", "c"}
    assert np.abs(np.array(body["a"]) - attn.numpy()).max() <= 5e-5 + 1e-7
    assert body["c"] == [[[], []]]


def _reference_json(values: np.ndarray) -> bytes:
    """The JSON text of ``values`` written the slow, obvious way: round each to 4 places in float64
    (NumPy's round half to even of the float32 value times 1e4), then Python's own float formatting."""
    if values.ndim == 1:
        return b"[" + b",".join(f"{v:.4f}".encode() for v in values.tolist()) + b"]"
    return b"[" + b",".join(_reference_json(sub) for sub in values) + b"]"


def _rounded(attn: torch.Tensor) -> np.ndarray:
    x = np.rint(attn.numpy().astype(np.float32) * np.float32(1e4)).astype(np.float64)  # same float32 product
    return np.clip(x, 0, 1e4) / 1e4 + 0.0  # + 0.0 turns -0.0 into 0.0


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (1, 7), (5, 1), (3, 4), (1, 1, 1, 1), (2, 3, 7, 7), (6, 12, 20, 20), (2, 1, 3, 1, 4), (4, 2, 9, 9)],
)
@pytest.mark.parametrize("group", [1, 64, 1 << 18])
def test_weights_json_is_byte_for_byte_the_reference(shape: tuple[int, ...], group: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Every shape and every grouping (per matrix, a few matrices, everything at once) writes the same text
    as formatting each rounded weight with Python and joining with json.dumps' compact separators; it
    parses to exactly the rounded values."""
    import headmap.serving.encoding as encoding

    monkeypatch.setattr(encoding, "_GROUP_WEIGHTS", group)
    gen = torch.Generator().manual_seed(sum(shape) + group)
    attn = (torch.randn(shape, generator=gen) * 3).softmax(-1)
    body = bytes(dumps({"attention": Weights(attn)}))
    rounded = _rounded(attn)
    assert body == b'{"attention":' + _reference_json(rounded) + b"}"
    assert json.loads(body)["attention"] == json.loads(json.dumps(rounded.tolist()))
    assert len(Weights(attn)) == len(body) - len(b'{"attention":}')


def test_weights_json_edge_values_exactly() -> None:
    """0, 1, 1e-5, values at and around the rounding step, negative zero and values a hair outside [0, 1]."""
    values = [0.0, 1.0, 1e-5, 4.9e-5, 5.1e-5, 1e-4, 0.99994, 0.99996, -0.0, -1e-7, 1.0000001, 0.25, 0.123456]
    attn = torch.tensor([values, values[::-1]])  # (2, 13)
    body = bytes(dumps({"attention": Weights(attn)}))
    expected = [0.0, 1.0, 0.0, 0.0, 0.0001, 0.0001, 0.9999, 1.0, 0.0, 0.0, 1.0, 0.25, 0.1235]
    assert json.loads(body)["attention"] == [expected, expected[::-1]]
    assert b"-" not in body and b"nan" not in body.lower()  # no "-0.0000", never a NaN
    assert body.count(b"0.0000") == 2 * 5  # each zero (0, 1e-5, 4.9e-5, -0, -1e-7) written in full
    assert body.startswith(b'{"attention":[[0.0000,1.0000,0.0000,0.0000,0.0001,0.0001,0.9999,1.0000,')


@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 2, 3, 4), (1, 2, 4, 4)])
def test_weights_json_rejects_nan_anywhere(where: tuple[int, int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    import headmap.serving.encoding as encoding

    monkeypatch.setattr(encoding, "_GROUP_WEIGHTS", 25)  # one matrix per group: the NaN is in a later group
    attn = torch.full((2, 3, 5, 5), 0.2)
    attn[where] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dumps({"attention": Weights(attn)})
