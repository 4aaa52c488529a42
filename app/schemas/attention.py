"""Pydantic schemas of every request and response: the OpenAPI page is built from these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_TEXT = "The cat sat on the mat because it was tired."

#: Decimal places kept in the default JSON encoding (absolute error <= 5e-5).
JSON_DECIMALS = 4
#: Levels of the compact uint8 encoding: weight = byte / 255 (absolute error <= 1/510).
COMPACT_LEVELS = 255


class ErrorResponse(BaseModel):
    """The one error shape every 4xx and 5xx uses."""

    error: str = Field(description="Stable machine-readable code.", examples=["model_not_found"])
    detail: str = Field(
        description="Human-readable explanation.", examples=["Unknown model 'x'; available: minilm, custom"]
    )


class AttentionRequest(BaseModel):
    """What to run: a text (and optional second segment) through one model."""

    # strict: no silent coercion ("truncate": 0, "layers": ["1"]); the body must match the published schema.
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"text": EXAMPLE_TEXT, "model": "minilm"}]}
    )

    text: str = Field(description="The text to analyse. Must contain a non-space character.", examples=[EXAMPLE_TEXT])
    model: str | None = Field(
        None, description="Model name from `GET /api/models`; default `minilm`.", examples=["minilm"]
    )
    text_pair: str | None = Field(
        None,
        description="Optional second segment (sentence pair), encoded as `[CLS] a [SEP] b [SEP]`.",
        examples=[None],
    )
    layers: list[int] | None = Field(
        None, description="Layer indices to return (0-based); all when null.", examples=[[0, 5]]
    )
    heads: list[int] | None = Field(
        None, description="Head indices to return (0-based); all when null.", examples=[None]
    )
    truncate: bool = Field(
        False, description="Cut the input to the model's `max_tokens` instead of answering 413.", examples=[False]
    )
    encoding: Literal["json", "compact"] = Field(
        "json",
        description=(
            "`json`: `attention` holds nested float lists written with 4 decimals (error <= 5e-5), 7 bytes per weight. "
            "`compact`: `attention` is null and `attention_compact` holds base64 uint8 levels "
            "(weight = byte / 255, error <= 0.002), about 1.33 bytes per weight."
        ),
    )
    measure: Literal["weights", "norms"] = Field(
        "weights",
        description=(
            "`weights`: the attention weights α. `norms` (Kobayashi et al. 2020): `attention` holds per head "
            "‖α^h_ij · f_h(x_j)‖ with f_h(x) = (x W_V^h + b_V^h) W_O^h, the length of the vector each head moves "
            "from key j to query i, and `layer_norms` holds ‖Σ_h α^h_ij f_h(x_j)‖ per layer. Norms are not "
            "bounded by 1; with `compact`, `attention_compact.scale` is max/255. Only for BERT-style encoders "
            "(422 `measure_unsupported` otherwise)."
        ),
    )


class CompactTensor(BaseModel):
    """A quantised tensor: base64 of row-major uint8 bytes; value = byte * scale."""

    dtype: Literal["uint8"] = Field("uint8", description="Element type of the decoded bytes.")
    shape: list[int] = Field(
        description="Dimensions, row-major: [layers, heads, query, key].", examples=[[6, 12, 8, 8]]
    )
    scale: float = Field(
        description="Multiply each byte by this to get the value (1/255 for weights; max/255 for norms).",
        examples=[1 / 255],
    )
    data: str = Field(description="Base64 (RFC 4648, with padding) of the bytes.")


class AttentionResponse(BaseModel):
    """Per-layer, per-head attention weights over the tokens of the input."""

    model: str = Field(description="Model that produced the weights.", examples=["minilm"])
    kind: Literal["encoder", "decoder", "custom"] = Field(description="Model family.", examples=["encoder"])
    tokens: list[str] = Field(description="The tokenizer's own token strings, e.g. `[CLS]`, `##ing`.")
    offsets: list[list[int] | None] = Field(
        description="`[start, end)` character offsets of each token into the submitted `text` (or `text_pair` "
        "for tokens of segment 1); null for special tokens.",
    )
    special: list[bool] = Field(description="True for special tokens such as `[CLS]` and `[SEP]`.")
    unknown: list[bool] = Field(description="True where the tokenizer produced its unknown token (e.g. `[UNK]`).")
    segments: list[int] = Field(description="Segment of each token: 0 for `text`, 1 for `text_pair`.")
    layers: list[int] = Field(description="Layer indices, in the order of `attention`'s first axis.")
    heads: list[int] = Field(description="Head indices, in the order of `attention`'s second axis.")
    attention: list[list[list[list[float]]]] | None = Field(
        description="`attention[layer][head][query][key]`: each query row sums to 1 (within rounding). "
        "Null with `encoding=compact`.",
    )
    attention_compact: CompactTensor | None = Field(
        None, description="The same weights, quantised, with `encoding=compact`; null otherwise."
    )
    truncated: bool = Field(description="True if the input was cut to `max_tokens`.")
    measure: Literal["weights", "norms"] = Field("weights", description="What `attention` holds (see the request).")
    layer_norms: list[list[list[float]]] | None = Field(
        None,
        description="With `measure: norms`: `layer_norms[layer][query][key]` = ‖Σ_h α^h_ij f_h(x_j)‖ over all heads "
        "of the layer, rounded to 4 decimals; null otherwise.",
    )


class ModelInfo(BaseModel):
    """One loadable model."""

    name: str = Field(examples=["minilm"])
    kind: Literal["encoder", "decoder", "custom"] = Field(examples=["encoder"])
    num_layers: int = Field(examples=[6])
    num_heads: int = Field(examples=[12])
    max_tokens: int = Field(description="Most tokens one request may use, special tokens included.", examples=[512])
    description: str = Field(examples=["sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads"])
    supports_pair: bool = Field(description="Whether `text_pair` is accepted.", examples=[True])


class ModelList(BaseModel):
    """Models that are loaded and serving, plus the default."""

    default: str = Field(examples=["minilm"])
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness: 200 once every model loaded (or failed) and warmed up, 503 before."""

    ready: bool
    models: list[str] = Field(description="Models loaded and warmed up.")
    failed: dict[str, str] = Field(default_factory=dict, description="Models that failed to load, with the reason.")
