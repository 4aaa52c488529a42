"""Pydantic schemas of every request and response: the OpenAPI page is built from these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models.engine import Kind
from .fields import Generate, Heads, Layers, ModelName, Predictions, Target, Text, TextPair, Truncate

EXAMPLE_TEXT = "The cat sat on the mat because it was tired."

LABELS_DESCRIPTION = (
    "What each token covers in the text, to show instead of `tokens`: byte-level BPE and SentencePiece tokens read "
    "as text (`Ġis` -> `␣is`, `æ³¨æĦı` -> `注意`). A space the token carries is shown as `␣`, a newline as `↵`. A "
    "character whose bytes are split over several tokens is shown whole on the first of them and as `…` on the "
    "rest. Tokens without offsets (`[CLS]`, `<s>`) keep their own string; an `[UNK]` shows the text it replaced."
)
WORD_IDS_DESCRIPTION = (
    "Word of each token: tokens with the same number form one word (0, 1, … in order). Null for special tokens, "
    "punctuation and spaces. From the tokenizer's word boundaries, except in runs of Chinese characters, which are "
    "segmented into words by jieba (注意力 / 机制) however the model split them. A word never spans two segments."
)
UNKNOWN_COUNT_DESCRIPTION = "How many of the text's tokens are the model's unknown token (`[UNK]`)."
UNKNOWN_SHARE_DESCRIPTION = (
    "`unknown_count` / number of non-special tokens (0 when there are none). Above 0.1 the model does not know "
    'the script well: see the README section "Models for Chinese and other languages".'
)

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

    text: Text
    model: ModelName = None
    text_pair: TextPair = None
    target: Target = None
    layers: Layers = None
    heads: Heads = None
    truncate: Truncate = False
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
    predictions: Predictions = None
    generate: Generate = None


class Candidate(BaseModel):
    """One token the model proposes, with its probability."""

    token_id: int = Field(description="Its id in the tokenizer's vocabulary.", examples=[2003])
    token: str = Field(description="The tokenizer's own string (`##ing`, `Ġcat`).", examples=["cat"])
    label: str = Field(description="The token decoded as text (a leading space shown as `␣`).", examples=["cat"])
    probability: float = Field(description="softmax of the model's logits at this position, 6 decimals.",
                               examples=[0.4123])  # fmt: skip


class Prediction(BaseModel):
    """The model's top candidates at one position."""

    position: int = Field(description="Token position (index into `tokens`).", examples=[3])
    kind: Literal["mask", "next"] = Field(
        description="`mask`: replacements for the mask token at `position` (masked-LM models); `next`: the token "
        "after `position` (decoders), so position T−1 predicts what would follow the text.",
        examples=["mask"],
    )
    candidates: list[Candidate] = Field(description="The top k, most probable first.")


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
    kind: Kind = Field(description="Model family.", examples=["encoder"])
    tokens: list[str] = Field(description="The tokenizer's own token strings, e.g. `[CLS]`, `##ing`.")
    labels: list[str] = Field(description=LABELS_DESCRIPTION)
    word_ids: list[int | None] = Field(description=WORD_IDS_DESCRIPTION)
    unknown_count: int = Field(description=UNKNOWN_COUNT_DESCRIPTION, examples=[0])
    unknown_share: float = Field(description=UNKNOWN_SHARE_DESCRIPTION, examples=[0.0])
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
    # -- encoder–decoder models (kind `encoder-decoder`); null otherwise. `attention` is the encoder's. --
    target_tokens: list[str] | None = Field(
        None,
        description="Encoder–decoder models: the decoder's input tokens, its start token (`<pad>` for T5 and Marian, "
        "`</s>` for BART) then the tokenized `target`. `tokens` are the source's; `attention` is then the encoder's "
        "self-attention `[layer][head][source][source]`. Null for other models.",
    )
    target_labels: list[str] | None = Field(None, description="`labels` of `target_tokens`.")
    target_word_ids: list[int | None] | None = Field(None, description="`word_ids` of `target_tokens`.")
    target_offsets: list[list[int] | None] | None = Field(
        None, description="`[start, end)` offsets of `target_tokens` into `target`; null for special tokens."
    )
    target_special: list[bool] | None = Field(None, description="`special` of `target_tokens`.")
    target_unknown: list[bool] | None = Field(None, description="`unknown` of `target_tokens`.")
    target_truncated: bool | None = Field(None, description="True if `target` was cut to `max_tokens`.")
    decoder_layers: list[int] | None = Field(
        None,
        description="Layer indices of `decoder_attention` and `cross_attention` (the request's `layers`; all of the "
        "decoder's when null, which may be fewer or more than the encoder's).",
    )
    decoder_heads: list[int] | None = Field(
        None, description="Head indices of `decoder_attention` and `cross_attention` (the request's `heads`)."
    )
    decoder_attention: list[list[list[list[float]]]] | None = Field(
        None,
        description="`decoder_attention[layer][head][target][target]`: the decoder's causal self-attention (each "
        "target token attends to itself and the ones before it). Null with `encoding=compact` and for other models.",
    )
    decoder_attention_compact: CompactTensor | None = Field(
        None, description="`decoder_attention` quantised, with `encoding=compact`."
    )
    cross_attention: list[list[list[list[float]]]] | None = Field(
        None,
        description="`cross_attention[layer][head][target][source]`: what each target token attends to among the "
        "source tokens (the encoder's output). Rows sum to 1. Null with `encoding=compact` and for other models.",
    )
    cross_attention_compact: CompactTensor | None = Field(
        None, description="`cross_attention` quantised, with `encoding=compact`: shape [layers, heads, target, source]."
    )
    predictions: list[Prediction] | None = Field(
        None,
        description="With `predictions` in the request: one entry per mask token (masked-LM models) or per "
        "position (decoders); absent otherwise.",
    )
    generated: list[bool] | None = Field(
        None,
        description="With `generate`: true for each token the model generated (they follow the prompt's tokens); "
        "absent otherwise.",
    )
    generated_text: str | None = Field(
        None,
        description="With `generate`: the generated continuation as text. Offsets of generated tokens index into "
        "`text + generated_text`.",
    )


class ModelInfo(BaseModel):
    """One loaded model: its architecture's numbers, as the model's own config gives them."""

    name: str = Field(examples=["minilm"])
    kind: Kind = Field(
        description="`encoder` (bidirectional), `decoder` (causal), `encoder-decoder` or `custom` (textbook block).",
        examples=["encoder"],
    )
    family: str = Field(
        description="The config's `model_type` (`bert`, `llama`, `qwen2`, ...); `textbook` for the custom block.",
        examples=["bert"],
    )
    num_layers: int = Field(examples=[6])
    num_heads: int = Field(description="Query heads per layer.", examples=[12])
    num_kv_heads: int = Field(
        description="Key/value heads per layer: fewer than `num_heads` under grouped-query attention, each shared "
        "by `num_heads / num_kv_heads` query heads.",
        examples=[12],
    )
    head_dim: int = Field(description="Size of each head's query and key vectors.", examples=[32])
    dtype: Literal["float32", "bfloat16"] = Field(description="Data type of the weights.", examples=["float32"])
    num_parameters: int = Field(description="Parameters of the model as loaded (no LM head).", examples=[22713216])
    can_predict: bool = Field(
        description="Whether the checkpoint has a masked-LM or causal-LM head (its architecture says so).",
        examples=[False],
    )
    source: str = Field(
        description="Where it was loaded from: `built-in`, a folder's name, or a hub id with the snapshot's commit.",
        examples=["Qwen/Qwen2.5-0.5B@060db6499f32faf8b98477b0a26969ef7d8b9987"],
    )
    max_tokens: int = Field(description="Most tokens one request may use, special tokens included.", examples=[512])
    description: str = Field(examples=["sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads"])
    supports_pair: bool = Field(description="Whether `text_pair` is accepted.", examples=[True])
    decoder_layers: int | None = Field(
        None, description="Encoder–decoder models: the decoder's layers (`num_layers` is the encoder's); else null."
    )
    decoder_heads: int | None = Field(
        None,
        description="Encoder–decoder models: the decoder's heads per layer (self- and cross-attention); else null.",
    )
    mask_token: str | None = Field(
        None, description="The tokenizer's mask token (`[MASK]`, `<mask>`); null when it has none.", examples=["[MASK]"]
    )


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


class Messages(BaseModel):
    """One language's message catalogue (every user-facing string of the page and reports)."""

    lang: str = Field(description="The language given: `?lang=`, else the cookie, else `Accept-Language`, else en.",
                      examples=["zh-CN"])  # fmt: skip
    languages: list[str] = Field(description="Every language with a catalogue.", examples=[["en", "zh-CN"]])
    messages: dict[str, str] = Field(description="Key -> text; `{name}` marks a value to fill in.")
    glossary: dict[str, str] = Field(description="English term -> the term this language uses for it, consistently.")
