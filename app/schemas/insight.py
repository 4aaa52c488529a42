"""Pydantic schemas of the insight API: head statistics, aggregates, compare and the explainer.

Kept apart from ``app.schemas`` (the attention API) so the two families can change independently;
the request bodies reuse ``AttentionRequest`` so every field means the same everywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..attention.definitions import MEASURES, ROLLOUT, STATISTIC
from ..models.engine import Kind
from .attention import (
    EXAMPLE_TEXT,
    LABELS_DESCRIPTION,
    UNKNOWN_COUNT_DESCRIPTION,
    UNKNOWN_SHARE_DESCRIPTION,
    WORD_IDS_DESCRIPTION,
    AttentionRequest,
)
from .fields import Heads, Layers, ModelName, Text, TextPair, Truncate

Matrix = list[list[float]]

# The definitions are written once, in attention/definitions.py; the schema only adds the API's detail.
ROLLOUT_FORMULA = (
    f"{ROLLOUT.text()} The mean is over the requested `heads`; the product always runs over every layer from 0 "
    "up to `l`, whichever `layers` are returned."
)


class InsightRequest(AttentionRequest):
    """The `/api/attention` request body; only the `json` encoding is offered here."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"text": EXAMPLE_TEXT, "model": "minilm"}]}
    )

    # Narrowed from the parent's Literal["json", "compact"]: these responses are small or derived
    # matrices, so a quantised variant would only add a second code path.
    encoding: Literal["json"] = Field(
        "json", description="Always `json` here: numbers are floats rounded to 4 decimals."
    )
    measure: Literal["weights"] = Field("weights", description="Always `weights` here.")
    target: None = Field(
        None,
        description="Not taken here: on an encoder–decoder model these figures describe the encoder's "
        "self-attention over the source; `POST /api/attention` takes a `target`.",
    )
    predictions: None = Field(None, description="Only in `/api/attention`; always null here.")
    generate: None = Field(None, description="Only in `/api/attention`; always null here.")


class TokenInfo(BaseModel):
    """The tokenized input, as in `/api/attention`."""

    model: str = Field(description="Model that produced the weights.", examples=["minilm"])
    kind: Kind = Field(description="Model family.", examples=["encoder"])
    tokens: list[str] = Field(description="The tokenizer's own token strings, e.g. `[CLS]`, `##ing`.")
    labels: list[str] = Field(description=LABELS_DESCRIPTION)
    word_ids: list[int | None] = Field(description=WORD_IDS_DESCRIPTION)
    unknown_count: int = Field(description=UNKNOWN_COUNT_DESCRIPTION, examples=[0])
    unknown_share: float = Field(description=UNKNOWN_SHARE_DESCRIPTION, examples=[0.0])
    special: list[bool] = Field(description="True for special tokens such as `[CLS]` and `[SEP]`.")
    segments: list[int] = Field(description="Segment of each token: 0 for `text`, 1 for `text_pair`.")
    truncated: bool = Field(description="True if the input was cut to `max_tokens`.")


# -- statistics ------------------------------------------------------------------------------------


class HeadStatistics(BaseModel):
    """One `[layer][head]` matrix per statistic, indexed like the response's `layers` and `heads`.

    w is one head's T×T weight matrix, q a query row, k a key column. "Averaged over query rows" is
    an unweighted mean over every row (special tokens included) unless stated otherwise.
    """

    entropy: Matrix = Field(description=STATISTIC["entropy"].text(), examples=[[[0.62, 1.85]]])
    distance: Matrix = Field(description=STATISTIC["distance"].text(), examples=[[[0.9, 3.4]]])
    max_weight: Matrix = Field(description=STATISTIC["max_weight"].text(), examples=[[[0.98, 0.51]]])
    row_max: Matrix = Field(description=STATISTIC["row_max"].text(), examples=[[[0.81, 0.32]]])
    to_cls: Matrix | None = Field(description=STATISTIC["to_cls"].text(), examples=[[[0.05, 0.4]]])
    to_sep: Matrix | None = Field(description=STATISTIC["to_sep"].text(), examples=[[[0.3, 0.1]]])
    to_self: Matrix = Field(description=STATISTIC["to_self"].text(), examples=[[[0.1, 0.02]]])
    to_previous: Matrix | None = Field(description=STATISTIC["to_previous"].text(), examples=[[[0.7, 0.05]]])
    to_next: Matrix | None = Field(description=STATISTIC["to_next"].text(), examples=[[[0.05, 0.02]]])
    to_first: Matrix = Field(description=STATISTIC["to_first"].text(), examples=[[[0.62, 0.08]]])


class StatsRequest(InsightRequest):
    """The attention request, plus whether to add the head similarity."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"text": EXAMPLE_TEXT, "model": "minilm", "similarity": True}]},
    )

    similarity: bool = Field(
        False,
        description="Also return the Jensen–Shannon distances between the heads and their 2-D MDS map (413 "
        "`too_many_tokens_for_similarity` past `HEADMAP_SIMILARITY_MAX_TOKENS`).",
    )


class MeasureDefinition(BaseModel):
    """A measure's name, formula and reference (the help text)."""

    title: str = Field(examples=["Head similarity"])
    formula: str
    reference: str


class HeadSimilarity(BaseModel):
    """How alike the requested heads attend on this input (Clark et al. 2019)."""

    heads: list[list[int]] = Field(
        description="`[layer, head]` of each row/column of `distance` and each point of `embedding`, layer-major.",
        examples=[[[0, 0], [0, 1]]],
    )
    distance: Matrix = Field(
        description="`distance[a][b]`: mean over query rows of the Jensen–Shannon distance (base 2, 0..1) between "
        "head a's and head b's attention rows; symmetric, zero diagonal."
    )
    embedding: Matrix = Field(
        description="`embedding[a] = [x, y]`: classical MDS of `distance` in 2-D (heads close together attend alike).",
        examples=[[[0.12, -0.03], [0.4, 0.2]]],
    )
    definition: MeasureDefinition


class StatsResponse(TokenInfo):
    """Statistics of every requested layer × head."""

    layers: list[int] = Field(description="Layer indices, in the order of each statistic's first axis.")
    heads: list[int] = Field(description="Head indices, in the order of each statistic's second axis.")
    cls_positions: list[int] = Field(
        description="Positions counted as [CLS]: special tokens whose string is the tokenizer's `cls_token` "
        "(`[CLS]`, `<s>`). Empty when there is none.",
        examples=[[0]],
    )
    sep_positions: list[int] = Field(
        description="Positions counted as [SEP]: special tokens whose string is the tokenizer's `sep_token` "
        "(`[SEP]`, `</s>`). Empty when there is none.",
        examples=[[11]],
    )
    stats: HeadStatistics = Field(description="Each statistic as a `[layer][head]` matrix, rounded to 4 decimals.")
    similarity: HeadSimilarity | None = Field(None, description="With `similarity: true`; null otherwise.")


# -- aggregates ------------------------------------------------------------------------------------

AggregateName = Literal["mean", "max", "rollout", "flow", "alti", "alti_rollout"]


def _measure_text(name: str) -> str:
    m = MEASURES[name]
    return f"{m['title']}: {m['formula']} Reference: {m['reference']}"


class AggregateRequest(InsightRequest):
    """An attention request plus which aggregates over heads to return."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"text": EXAMPLE_TEXT, "model": "minilm", "methods": ["mean", "rollout"]}]},
    )

    methods: list[AggregateName] = Field(
        default=["mean", "max", "rollout"],
        min_length=1,
        description="Aggregates to compute; the others come back null. `flow` answers 413 "
        "`too_many_tokens_for_flow` past `HEADMAP_FLOW_MAX_TOKENS` tokens; `alti` and `alti_rollout` need a "
        "BERT-style encoder (422 `measure_unsupported` otherwise) and answer 413 `too_many_tokens_for_alti` past "
        "`HEADMAP_ALTI_MAX_TOKENS`.",
        examples=[["mean", "rollout"]],
    )


class AggregateResponse(TokenInfo):
    """Per-layer T×T matrices that combine the heads."""

    layers: list[int] = Field(description="Layer indices, in the order of each matrix's first axis.")
    heads: list[int] = Field(description="The heads that were combined.")
    mean: list[Matrix] | None = Field(
        description="`mean[layer][query][key]` = mean over `heads` of the weights; rows sum to 1. Null unless asked."
    )
    max: list[Matrix] | None = Field(
        description="`max[layer][query][key]` = maximum over `heads` of the weights; rows do not sum to 1. "
        "Null unless asked."
    )
    rollout: list[Matrix] | None = Field(
        description=f"`rollout[layer][query][key]`. {ROLLOUT_FORMULA} Null unless asked."
    )
    flow: list[Matrix] | None = Field(
        None,
        description=f"`flow[layer][query][key]`, over the requested `heads`. {_measure_text('flow')} "
        "Null unless asked.",
    )
    alti: list[Matrix] | None = Field(
        None,
        description=f"`alti[layer][query][key]`. {_measure_text('alti')} Null unless asked.",
    )
    alti_rollout: list[Matrix] | None = Field(
        None,
        description=f"`alti_rollout[layer][query][key]`. {_measure_text('alti_rollout')} Null unless asked.",
    )


# -- compare ---------------------------------------------------------------------------------------


class CompareInput(BaseModel):
    """One side of a comparison."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Text
    text_pair: TextPair = None
    model: ModelName = None


CompareView = Literal["heads", "mean", "max", "rollout"]


class CompareRequest(BaseModel):
    """Two inputs (two texts, or one text through two models that share a tokenizer) and what to compare.

    `layers` and `heads` must be valid for both models; null means the ones both models have.
    """

    # strict like AttentionRequest: no silent coercion ("truncate": 0, "layers": ["1"]).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "a": {"text": "The doctor said he was tired."},
                    "b": {"text": "The doctor said she was tired."},
                    "layers": [0],
                },
                {"a": {"text": EXAMPLE_TEXT, "model": "minilm"}, "b": {"text": EXAMPLE_TEXT, "model": "custom"}},
            ]
        },
    )

    a: CompareInput
    b: CompareInput
    layers: Layers = None
    heads: Heads = None
    view: CompareView = Field(
        "heads",
        description="`heads`: each requested head. `mean`, `max`, `rollout`: one aggregate over the requested "
        "heads per layer (see `/api/aggregate`), returned with a head axis of length 1.",
        examples=["heads"],
    )
    truncate: Truncate = False


class CompareSide(TokenInfo):
    """One side's tokens and weights."""

    attention: list[list[Matrix]] = Field(
        description="`attention[layer][head][query][key]`, rounded to 4 decimals. With an aggregate `view`, the head "
        "axis has length 1 and holds the aggregate."
    )


class CompareResponse(BaseModel):
    """Both sides and, when their tokens line up, the difference A − B."""

    layers: list[int] = Field(description="Layer indices of the first axis of every matrix.")
    heads: list[int] = Field(description="Head indices of the second axis (the heads combined, for an aggregate view).")
    view: CompareView = Field(examples=["heads"])
    aligned: bool = Field(
        description="True when position i means the same slot on both sides, so A − B is meaningful: the same "
        "number of tokens, special tokens and segments at the same positions, and, when the models differ, the "
        "very same token strings. Two texts on one model may differ in some words (a minimal pair); those "
        "positions are listed in `mismatched_positions`."
    )
    reason: str | None = Field(
        description="Why the sides do not align, in plain words; null when aligned.",
        examples=["A has 12 tokens and B has 14, so positions do not correspond."],
    )
    mismatched_positions: list[int] = Field(
        description="Aligned positions whose token strings differ (a word swapped for another of the same length "
        "in tokens). Empty when the token lists are identical or the sides are not aligned.",
        examples=[[4]],
    )
    a: CompareSide
    b: CompareSide
    diff: list[list[Matrix]] | None = Field(
        description="`diff[layer][head][query][key]` = A − B, from unrounded weights, rounded to 4 decimals; null when "
        "not aligned."
    )


# -- explainer -------------------------------------------------------------------------------------


class ExplainRequest(BaseModel):
    """A text for the custom block, and which head to follow."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"text": "The cat sat.", "model": "custom", "head": 3}]},
    )

    text: Text
    text_pair: TextPair = None
    model: str = Field("custom", description="A model of kind `custom` (the textbook block).", examples=["custom"])
    head: int = Field(0, description="Head to follow through steps 2–5 (0-based).", examples=[3])
    truncate: Truncate = False


class ExplainMatrix(BaseModel):
    """One labelled matrix of a step."""

    name: str = Field(description="Symbol as in the textbook.", examples=["Q"])
    label: str = Field(description="What the matrix is.", examples=["Queries of head 3"])
    shape: list[int] = Field(description="Dimensions [rows, columns].", examples=[[6, 32]])
    rows: Literal["tokens"] = Field("tokens", description="Rows are the input tokens, in order.")
    columns: Literal["tokens", "features"] = Field(
        description="`tokens` for T×T matrices (key tokens), `features` for embedding or head dimensions.",
        examples=["features"],
    )
    values: Matrix = Field(description="The real numbers, rounded to 4 decimals.")


class ExplainParameter(BaseModel):
    """A learned weight used at a step (its shape, not its values)."""

    name: str = Field(examples=["W_q"])
    shape: list[int] = Field(examples=[[384, 32]])
    description: str = Field(examples=["Columns 96..127 of the query projection: the part that feeds head 3."])


class ExplainStep(BaseModel):
    """One step of the forward pass."""

    step: int = Field(description="1 to 7, in the textbook's order.", examples=[2])
    key: Literal["embeddings", "qkv", "scores", "weights", "weighted_sum", "residual_norm", "output"] = Field(
        description="Stable identifier of the step.", examples=["qkv"]
    )
    title: str = Field(examples=["Queries, keys and values"])
    formula: str = Field(examples=["Q = X·W_q + b_q"])
    explanation: str = Field(description="One sentence on what happens at this step.")
    parameters: list[ExplainParameter] = Field(description="Learned weights this step uses.")
    matrices: list[ExplainMatrix] = Field(description="The step's results, with real numbers.")


class ExplainResponse(TokenInfo):
    """The custom block's forward pass for one head, step by step, on the request's own tokens."""

    head: int = Field(examples=[3])
    num_heads: int = Field(examples=[12])
    embed_size: int = Field(description="E, the width of each token vector.", examples=[384])
    head_size: int = Field(description="d_k = E / num_heads, the width of one head's Q, K and V.", examples=[32])
    steps: list[ExplainStep] = Field(description="The seven steps, in order.")
