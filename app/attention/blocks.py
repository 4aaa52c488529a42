"""Block pooling of an attention matrix too large to hold: the overview of a run.

The T x T matrix of one head is cut into ``n x n`` blocks (``block_bounds``); each cell of the overview is
the max or the mean of the weights of its block of queries x keys. ``BlockPool`` takes the matrix a chunk
of query rows at a time (any chunk boundaries: a block may span chunks), so only ``rows x T`` is ever held.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Reduce = Literal["max", "mean"]


def block_bounds(num_tokens: int, size: int) -> np.ndarray:
    """``n + 1`` increasing token indices from 0 to ``num_tokens``, ``n = min(size, num_tokens)``: block ``i`` is
    tokens ``[b[i], b[i+1])``, as even as possible (``numpy.linspace`` rounded). A step >= 1 keeps them distinct."""
    if num_tokens < 1 or size < 1:
        raise ValueError(f"need num_tokens >= 1 and size >= 1, got {num_tokens}, {size}")
    n = min(size, num_tokens)
    return np.rint(np.linspace(0, num_tokens, n + 1)).astype(np.int64)


class BlockPool:
    """Accumulates ``reduce`` over the blocks ``q_bounds`` x ``k_bounds`` of a matrix fed in row chunks."""

    def __init__(self, q_bounds: np.ndarray, k_bounds: np.ndarray, reduce: Reduce) -> None:
        self.q_bounds, self.k_bounds, self.reduce = q_bounds, k_bounds, reduce
        nq, nk = len(q_bounds) - 1, len(k_bounds) - 1
        fill = -np.inf if reduce == "max" else 0.0
        self.acc = np.full((nq, nk), fill, dtype=np.float64)  # [nq, nk]
        self.rows_seen = 0

    def add(self, q0: int, rows: np.ndarray) -> None:
        """Rows ``q0 : q0 + len(rows)`` of the matrix, ``rows`` [r, T] (every key), in order from row 0."""
        if q0 != self.rows_seen:
            raise ValueError(f"rows must come in order: expected row {self.rows_seen}, got {q0}")
        r = rows.shape[0]
        q1 = q0 + r
        k_starts = self.k_bounds[:-1]
        if self.reduce == "max":
            by_key = np.maximum.reduceat(rows, k_starts, axis=1)  # [r, nk]
        else:
            by_key = np.add.reduceat(rows, k_starts, axis=1, dtype=np.float64)  # [r, nk]
        # The query blocks these rows fall in, and where each starts within the chunk.
        first = int(np.searchsorted(self.q_bounds, q0, side="right")) - 1
        last = int(np.searchsorted(self.q_bounds, q1 - 1, side="right")) - 1
        starts = np.maximum(self.q_bounds[first : last + 1], q0) - q0  # [blocks]
        if self.reduce == "max":
            part = np.maximum.reduceat(by_key, starts, axis=0)  # [blocks, nk]
            np.maximum(self.acc[first : last + 1], part, out=self.acc[first : last + 1])
        else:
            self.acc[first : last + 1] += np.add.reduceat(by_key, starts, axis=0)
        self.rows_seen = q1

    def result(self) -> np.ndarray:
        """The pooled ``[nq, nk]`` float32 matrix; every row must have been added."""
        if self.rows_seen != int(self.q_bounds[-1]):
            raise ValueError(f"{self.rows_seen} of {int(self.q_bounds[-1])} rows were added")
        if self.reduce == "max":
            return self.acc.astype(np.float32)
        cells = np.diff(self.q_bounds)[:, None] * np.diff(self.k_bounds)[None, :]  # [nq, nk]
        mean: np.ndarray = (self.acc / cells).astype(np.float32)
        return mean
