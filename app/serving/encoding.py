"""Turn attention tensors into response bytes fast.

``json``: each weight in [0, 1] is written with exactly ``JSON_DECIMALS`` places ("0.0132") by
looking its rounded value up in a table of the 10,001 possible strings: one vectorised gather per
group of matrices, stored straight into its place in the response buffer (a strided view), instead
of a float-to-text conversion per weight. 7 bytes a weight (separator included), against ~20 for
``json.dumps(tensor.tolist())``.
``compact``: weights quantised to uint8 levels (byte / 255) and base64-encoded: 1.33 bytes a weight.
Other arrays (statistics, differences) go through orjson straight from the NumPy buffer.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import torch

from ..schemas.attention import COMPACT_LEVELS, JSON_DECIMALS


def round_for_json(values: torch.Tensor) -> np.ndarray:
    """(...) float tensor -> float32 C-contiguous array rounded to ``JSON_DECIMALS`` places (for orjson)."""
    with torch.inference_mode():
        return np.ascontiguousarray(torch.round(values.float(), decimals=JSON_DECIMALS).numpy())


def quantise(attn: torch.Tensor) -> np.ndarray:
    """(L, ..., T, T) weights in [0, 1] -> uint8 levels; weight ~= level / 255, error <= 1/510.

    ``w * 255 + 0.5`` truncated is round-half-up for w >= 0. Done one slice of the first axis at a
    time, so the float temporary is a layer (12 MB at 512 tokens), not the whole tensor (75 MB).
    """
    with torch.inference_mode():
        levels = torch.empty(attn.shape, dtype=torch.uint8)
        for i in range(attn.shape[0]):
            levels[i] = attn[i].float().mul(COMPACT_LEVELS).add_(0.5).clamp_(max=COMPACT_LEVELS)
    return np.ascontiguousarray(levels.numpy())


def compact_tensor(attn: torch.Tensor) -> dict[str, Any]:
    """The ``CompactTensor`` schema for ``attn`` of shape (L, H, T, T), as a dict (data a str)."""
    packed = CompactWeights(attn)
    return {**packed.fields, "data": packed.data.decode("ascii")}


class CompactWeights:
    """``compact_tensor(attn)`` as JSON bytes for ``dumps``: the base64 text is copied into the response
    buffer as bytes, never decoded to a str and re-scanned by orjson (25 MB at 512 tokens)."""

    def __init__(self, attn: torch.Tensor, top: float = 1.0) -> None:
        """``top``: the value byte 255 stands for (1 for weights; the maximum for unbounded values like norms)."""
        levels = quantise(attn if top == 1.0 else attn / top)
        self.fields = {"dtype": "uint8", "shape": list(levels.shape), "scale": top / COMPACT_LEVELS}
        self.data = binascii.b2a_base64(levels.data, newline=False)
        self._head = orjson.dumps({**self.fields, "data": ""})[:-2]  # ends with "data":" (closing quote cut)

    def __len__(self) -> int:
        return len(self._head) + len(self.data) + 2

    def write(self, out: np.ndarray, pos: int) -> int:
        for part in (self._head, self.data, b'"}'):
            out[pos : pos + len(part)] = np.frombuffer(part, dtype=np.uint8)
            pos += len(part)
        return pos


_SCALE = 10**JSON_DECIMALS
#: Entry q is ",d.dddd,": the weight q / 10**JSON_DECIMALS between two separators, 8 bytes, so that a
#: whole matrix is gathered as native uint64 loads and stores. Entries are stored ``_WIDTH`` (7) bytes
#: apart: each one's trailing "," lands on the next one's leading "," (the same byte, so the order of
#: the overlapping stores does not matter), and brackets overwrite the separators at the ends of a row.
_TABLE = np.frombuffer(b"".join(f",{q / _SCALE:.{JSON_DECIMALS}f},".encode() for q in range(_SCALE + 1)), dtype="<u8")
_WIDTH = JSON_DECIMALS + 3  # bytes per weight in the text: its separator and "d.dddd"
if _TABLE.itemsize != _WIDTH + 1:
    raise ImportError(f"the JSON writer needs {JSON_DECIMALS + 4}-byte table entries (4 decimals)")
_COMMA, _OPEN, _CLOSE = ord(","), ord("["), ord("]")

#: Weights converted per group of matrices: few NumPy calls for short inputs, temporaries that stay in cache
#: (a layer at 128 tokens, a matrix at 512).
_GROUP_WEIGHTS = 1 << 18


def json_length(shape: tuple[int, ...]) -> int:
    """Bytes of the JSON nested list ``Weights`` writes for weights of ``shape`` (..., R, C), none of them 0."""
    *outer, rows, cols = (int(n) for n in shape)
    size = rows * (_WIDTH * cols + 2) + 1  # per row "," "[" values "]"; the first "," opens the matrix
    for n in reversed(outer):
        size = n * size + max(n - 1, 0) + 2  # items, separators, brackets
    return size


class Weights:
    """Attention weights in [0, 1], shape (..., R, C), to be written as a JSON nested list by ``dumps``.

    Wraps the tensor as it is (a strided view of the batch is fine): nothing is rounded or copied
    until ``dumps`` writes it. The text has a fixed layout (every weight is "d.dddd"), so each nesting
    level is a strided view of the response buffer: a group of matrices is rounded, looked up in
    ``_TABLE`` and stored straight into its place, and the brackets and separators of each level are
    one strided assignment each. No Python-level loop over rows or weights, no float formatting.
    """

    def __init__(self, attn: torch.Tensor) -> None:
        self.array = attn.detach().float().numpy()  # no copy for float32
        self._empty = orjson.dumps(self.array.tolist()) if 0 in self.array.shape else None  # no weights at all
        # sizes[d]: bytes of one list at depth d; sizes[ndim]: one weight's digits. Each list of n items
        # of s bytes is "[" + items joined by "," + "]": n * (s + 1) + 1 bytes, item i at 1 + i * (s + 1).
        sizes = [_WIDTH - 1]
        for n in reversed(self.array.shape):
            sizes.insert(0, int(n) * (sizes[0] + 1) + 1)
        self._sizes = sizes
        self._steps = [s + 1 for s in sizes[1:]]  # distance between consecutive items of each dimension

    def __len__(self) -> int:
        """Bytes of the JSON text."""
        return len(self._empty) if self._empty is not None else self._sizes[0]

    def write(self, out: np.ndarray, pos: int) -> int:
        """Write into the uint8 buffer ``out`` from ``pos``; return the position after the last byte."""
        if self._empty is not None:
            out[pos : pos + len(self._empty)] = np.frombuffer(self._empty, dtype=np.uint8)
            return pos + len(self._empty)
        shape, steps, ndim = self.array.shape, self._steps, self.array.ndim
        # Iterate over as few leading dimensions as keep a group under _GROUP_WEIGHTS (never past matrices).
        outer = next(k for k in range(ndim - 1) if k == ndim - 2 or math.prod(shape[k:]) <= _GROUP_WEIGHTS)
        for idx in np.ndindex(*shape[:outer]):
            start = pos + ndim - 1 + sum(i * s for i, s in zip(idx, steps, strict=False))  # first entry's ","
            entries = np.ndarray(shape[outer:], dtype=_TABLE.dtype, buffer=out, offset=start, strides=steps[outer:])
            _lookup(self.array[idx], entries)
        # Brackets and separators, level by level (rows last: their "[" and "]" replace the entries' ",").
        for depth in range(ndim):
            lists, strides, at = shape[:depth], steps[:depth], pos + depth  # lists at this depth; the first one
            level = np.ndarray(lists, dtype=np.uint8, buffer=out, offset=at, strides=strides)
            level[...] = _OPEN
            level = np.ndarray(lists, dtype=np.uint8, buffer=out, offset=at + self._sizes[depth] - 1, strides=strides)
            level[...] = _CLOSE
            if depth < ndim - 1 and shape[depth] > 1:  # between items (within rows, the entries brought theirs)
                between = (*lists, shape[depth] - 1)
                seps = np.ndarray(
                    between,
                    np.uint8,
                    buffer=out,
                    offset=at + self._sizes[depth + 1] + 1,
                    strides=(*strides, steps[depth]),
                )
                seps[...] = _COMMA
        return pos + self._sizes[0]


def _lookup(weights: np.ndarray, out: np.ndarray) -> None:
    """(...) weights in [0, 1] -> their ``_TABLE`` entries ",d.dddd," (uint64) in ``out`` (a strided view of
    the response), rounded half to even. The gather stores straight into ``out``: no entries temporary."""
    q = np.multiply(weights, _SCALE, dtype=np.float32)
    np.rint(q, out=q)
    np.clip(q, 0, _SCALE, out=q)  # float error can put a weight a hair outside [0, 1]; NaN stays NaN
    if np.isnan(q.max()):  # max propagates NaN: one reduction, no boolean temporary
        raise ValueError("attention weights contain NaN")
    # mode="clip" (indices are in range already) lets take write into a strided `out` without buffering it.
    np.take(_TABLE, q.astype(np.intp), out=out, mode="clip")


class LayerStream:
    """Weights of shape (L, H, R, C) to be written one layer at a time, as ``Weights`` (``json``) or
    ``CompactWeights`` (``compact``) would write them all at once: the same bytes, by ``stream``.

    ``layer(i)`` returns layer ``i``'s (H, R, C) tensor, computed when its turn comes (blocking), so only
    one layer and its text are held at a time.
    """

    def __init__(self, shape: tuple[int, int, int, int], layer: Callable[[int], torch.Tensor], encoding: str) -> None:
        self.shape, self.layer, self.encoding = shape, layer, encoding
        fields = {"dtype": "uint8", "shape": list(shape), "scale": 1 / COMPACT_LEVELS}
        self._head = orjson.dumps({**fields, "data": ""})[:-2]

    def __len__(self) -> int:
        if self.encoding == "json":
            return json_length(self.shape)
        levels = self.shape[0] * self.shape[1] * self.shape[2] * self.shape[3]
        return len(self._head) + 4 * -(-levels // 3) + 2

    def chunks(self) -> Iterator[bytes | memoryview]:
        if self.encoding == "json":
            for i in range(self.shape[0]):
                layer = Weights(self.layer(i))  # (H, R, C)
                out = bytearray(len(layer) + 1)
                out[0] = _OPEN if i == 0 else _COMMA
                layer.write(np.frombuffer(out, dtype=np.uint8), 1)
                yield memoryview(out)
            yield b"]"
            return
        yield self._head
        carry = b""  # base64 takes 3 bytes at a time: the 0-2 left over wait for the next layer
        for i in range(self.shape[0]):
            levels = carry + quantise(self.layer(i)[None]).tobytes()  # (1, H, R, C) uint8
            cut = len(levels) - len(levels) % 3
            carry = levels[cut:]
            yield binascii.b2a_base64(levels[:cut], newline=False)
        yield binascii.b2a_base64(carry, newline=False) + b'"}'


def _parts(payload: dict[str, Any]) -> list[bytes | Weights | CompactWeights | LayerStream]:
    """The payload as bytes and spliced values, small fields first, the big arrays last (`curl | head` shows
    the tokens)."""
    spliced = {k: v for k, v in payload.items() if isinstance(v, Weights | CompactWeights | LayerStream)}
    rest = orjson.dumps({k: v for k, v in payload.items() if k not in spliced}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not spliced:
        return [rest]
    parts: list[bytes | Weights | CompactWeights | LayerStream] = []
    opening = rest[:-1] + b"," if len(rest) > 2 else b"{"  # the other keys (without the closing brace), or none
    for i, (key, value) in enumerate(spliced.items()):
        parts += [(b"," if i else opening) + orjson.dumps(key) + b":", value]
    parts.append(b"}")
    return parts


def stream(payload: dict[str, Any]) -> tuple[int, Iterator[bytes | memoryview]]:
    """``dumps(payload)`` as its exact length and an iterator of its pieces, written as they are asked for
    (each ``next`` is blocking work: call it from a worker thread). ``LayerStream`` values go a layer a time."""
    parts = _parts(payload)

    def pieces() -> Iterator[bytes | memoryview]:
        for part in parts:
            if isinstance(part, bytes):
                yield part
            elif isinstance(part, LayerStream):
                yield from part.chunks()
            else:
                out = bytearray(len(part))
                part.write(np.frombuffer(out, dtype=np.uint8), 0)
                yield memoryview(out)

    return sum(len(part) for part in parts), pieces()


def dumps(payload: dict[str, Any]) -> bytes | memoryview:
    """Serialise a response dict whose arrays may be NumPy arrays, and values ``Weights``/``CompactWeights``.

    Those two are written into one buffer allocated at its final size (no growing copies); ``Weights``
    a group of matrices at a time, so other threads (the event loop) get turns in between where one
    orjson call over a 512-token response would hold the GIL for half a second.
    """
    parts = _parts(payload)
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]
    if any(isinstance(part, LayerStream) for part in parts):
        return b"".join(piece for piece in stream(payload)[1])
    out = bytearray(sum(len(part) for part in parts))
    buf = np.frombuffer(out, dtype=np.uint8)
    pos = 0
    for part in parts:
        if isinstance(part, bytes):
            buf[pos : pos + len(part)] = np.frombuffer(part, dtype=np.uint8)
            pos += len(part)
        elif not isinstance(part, LayerStream):
            pos = part.write(buf, pos)
    if pos != len(out):
        raise AssertionError(f"wrote {pos} bytes into a {len(out)}-byte response")
    del buf  # release the export so the bytearray could be resized by a caller
    return memoryview(out)  # Starlette sends a memoryview as is: no copy of a 100 MB body


def dequantise(data: dict[str, Any]) -> np.ndarray:
    """Inverse of ``compact_tensor`` (for clients and tests): float32 array of ``data['shape']``."""
    raw = np.frombuffer(base64.b64decode(data["data"]), dtype=np.uint8)
    return (raw.astype(np.float32) * np.float32(data["scale"])).reshape(data["shape"])
