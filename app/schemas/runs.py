"""Schemas of runs: one long input run once, then read as pooled overviews, exact tiles and single rows or
columns (issue 13)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models.engine import Kind
from .attention import (
    EXAMPLE_TEXT,
    LABELS_DESCRIPTION,
    UNKNOWN_COUNT_DESCRIPTION,
    UNKNOWN_SHARE_DESCRIPTION,
    WORD_IDS_DESCRIPTION,
    CompactTensor,
)
from .fields import ModelName, Text, TextPair, Truncate

HEAD_DESCRIPTION = (
    "Query head (0-based), or `mean` / `max`: the mean or max over the layer's query heads of the per-head weights."
)


class RunRequest(BaseModel):
    """What to run and keep: a text (and optional second segment) through one model."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"text": EXAMPLE_TEXT, "model": "minilm"}]}
    )

    text: Text
    model: ModelName = None
    text_pair: TextPair = None
    truncate: Truncate = False


class RunInfo(BaseModel):
    """A run the server holds: the input's tokens, the model's geometry, and how long it stays readable."""

    run_id: str = Field(description="Opaque, URL-safe id of the run.", examples=["kT3x0c1mJ5cQ2l3WnYVb0A"])
    model: str = Field(examples=["minilm"])
    kind: Kind = Field(examples=["encoder"])
    tokens: list[str] = Field(description="The tokenizer's own token strings, e.g. `[CLS]`, `##ing`.")
    labels: list[str] = Field(description=LABELS_DESCRIPTION)
    word_ids: list[int | None] = Field(description=WORD_IDS_DESCRIPTION)
    offsets: list[list[int] | None] = Field(
        description="`[start, end)` character offsets of each token into `text` (or `text_pair` for segment 1); "
        "null for special tokens."
    )
    special: list[bool] = Field(description="True for special tokens such as `[CLS]` and `[SEP]`.")
    unknown: list[bool] = Field(description="True where the tokenizer produced its unknown token (e.g. `[UNK]`).")
    segments: list[int] = Field(description="Segment of each token: 0 for `text`, 1 for `text_pair`.")
    unknown_count: int = Field(description=UNKNOWN_COUNT_DESCRIPTION, examples=[0])
    unknown_share: float = Field(description=UNKNOWN_SHARE_DESCRIPTION, examples=[0.0])
    truncated: bool = Field(description="True if the input was cut to the run's token limit.")
    num_layers: int = Field(examples=[6])
    num_heads: int = Field(description="Query heads per layer.", examples=[12])
    num_kv_heads: int = Field(description="Key/value heads per layer (fewer under grouped-query attention).")
    num_tokens: int = Field(description="Tokens of the input, special ones included.", examples=[11])
    bytes: int = Field(description="Memory the server holds for this run (counted against HEADMAP_RUN_CACHE_MB).")
    expires_at: str = Field(
        description="When the run stops being readable (ISO 8601, UTC); it may be dropped earlier to make room.",
        examples=["2026-12-02T16:30:00Z"],
    )


class Overview(BaseModel):
    """One layer and head of a run pooled into `size x size` blocks of queries x keys."""

    run_id: str
    layer: int
    head: int | Literal["mean", "max"] = Field(description=HEAD_DESCRIPTION)
    reduce: Literal["max", "mean"] = Field(description="How each block's weights became one cell.")
    num_tokens: int
    size: int = Field(description="`n = min(size asked, num_tokens)`: the matrix is n x n.")
    q_bounds: list[int] = Field(
        description="n + 1 increasing token indices from 0 to num_tokens: query block i is tokens "
        "`[q_bounds[i], q_bounds[i+1])`, split as evenly as possible (`numpy.linspace` rounded)."
    )
    k_bounds: list[int] = Field(description="The same for the keys.")
    matrix: list[list[float]] = Field(
        description="`matrix[i][j]`: max or mean of the weights of query block i x key block j, 4 decimals. Each "
        "weight is its row's exact softmax over all keys."
    )


class Tile(BaseModel):
    """The exact weights of a range of queries x keys of one layer and head."""

    run_id: str
    layer: int
    head: int | Literal["mean", "max"] = Field(description=HEAD_DESCRIPTION)
    q0: int
    q1: int
    k0: int
    k1: int
    weights: list[list[float]] | None = Field(
        description="`weights[i][j]` = weight of query q0+i on key k0+j, 4 decimals: rows of the full softmax over "
        "all keys, not renormalised to the tile. Null with `encoding=compact`."
    )
    weights_compact: CompactTensor | None = Field(
        None, description="With `encoding=compact`: the weights as uint8 levels, shape `[q1-q0, k1-k0]`."
    )


#: Decimals of a vector's weights: a run's rows spread over thousands of keys (weights near 1/T), which 4 would
#: flatten; one vector is small, so it carries 6.
VECTOR_DECIMALS = 6


class Vector(BaseModel):
    """One row (a query's weights over every key) or one column (every query's weight on a key) of a run."""

    run_id: str
    layer: int
    head: int | Literal["mean", "max"] = Field(description=HEAD_DESCRIPTION)
    index: int = Field(description="The query (axis `query`) or key (axis `key`) the vector belongs to.")
    axis: Literal["query", "key"] = Field(
        description="`query`: `weights[k]` = weight of query `index` on key k (a row); `key`: `weights[q]` = "
        "weight of query q on key `index` (a column)."
    )
    num_tokens: int
    weights: list[float] = Field(
        description=f"num_tokens weights, {VECTOR_DECIMALS} decimals. Each is its query row's exact softmax over all "
        "keys (a column is not renormalised); a causal model's row is 0 past its query."
    )
