"""A static PNG of the model grid, for notebook viewers that run no scripts (GitHub, nbviewer).

The image repeats the interactive grid: one tile per head (rows = layers, columns = heads), each
tile its query × key matrix from white (0) to dark blue (1), the same ramp as the grid's canvases.
Written with ``zlib`` alone (PNG is a zlib stream of filtered rows in CRC-checked chunks), so no
imaging library is needed.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: Largest tile side in pixels: longer inputs are max-pooled down to it (the strongest weight stays visible).
MAX_TILE = 64
#: Smallest tile side: short inputs are enlarged by whole pixels up to about this.
MIN_TILE = 40
#: About how many pixels the whole image may have: big models get smaller tiles (down to 8 px).
MAX_PIXELS = 1_500_000
#: Pixels between tiles.
GAP = 2
#: Endpoints of the ramp, as the notebook grid's canvases draw it.
LOW = np.array([255, 255, 255], dtype=np.float32)
HIGH = np.array([8, 48, 107], dtype=np.float32)
GAP_RGB = (208, 215, 222)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """``rgb``: uint8 ``[height, width, 3]`` -> PNG bytes (8-bit truecolour, filter 0 on every row)."""
    height, width, _ = rgb.shape
    raw = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # [height, 1 + 3·width]: filter byte + row
    raw[:, 1:] = rgb.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _pool(matrix: np.ndarray, size: int) -> np.ndarray:
    """Max over ``size`` × ``size`` nearly equal blocks of a ``[T, T]`` matrix."""
    t = matrix.shape[0]
    starts = np.linspace(0, t, size + 1).round().astype(int)[:-1]  # [size]
    rows = np.maximum.reduceat(matrix, starts, axis=0)  # [size, T]
    return np.maximum.reduceat(rows, starts, axis=1)  # [size, size]


def grid_png(attention: np.ndarray) -> bytes:
    """``attention``: ``[layers, heads, T, T]`` weights in [0, 1] -> the model grid as PNG bytes."""
    layers, heads, t, _ = attention.shape
    cap = int(min(MAX_TILE, max(8, (MAX_PIXELS / (layers * heads)) ** 0.5)))
    if t > cap:
        side, scale = cap, 1
        tiles = np.stack([[_pool(attention[i, h], cap) for h in range(heads)] for i in range(layers)])
    else:
        scale = max(1, -(-MIN_TILE // t))  # ceil: whole-pixel enlargement
        side = t * scale
        tiles = attention.repeat(scale, axis=2).repeat(scale, axis=3)  # [layers, heads, side, side]
    w = np.clip(tiles.astype(np.float32), 0.0, 1.0)[..., None]  # [layers, heads, side, side, 1]
    colours = np.rint(LOW + (HIGH - LOW) * w).astype(np.uint8)  # [layers, heads, side, side, 3]
    height = layers * side + (layers + 1) * GAP
    width = heads * side + (heads + 1) * GAP
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GAP_RGB
    for layer in range(layers):
        y = GAP + layer * (side + GAP)
        for h in range(heads):
            x = GAP + h * (side + GAP)
            image[y : y + side, x : x + side] = colours[layer, h]
    return encode_png(image)
