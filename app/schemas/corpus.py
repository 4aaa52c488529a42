"""Pydantic schemas of the corpus API (`/api/corpus`) and of `summary.json`, which `headmap corpus` writes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .attention import EXAMPLE_TEXT
from .fields import JsonInt, ModelName, integral

Matrix = list[list[float]]
NullableMatrix = list[list[float | None]]


class CorpusOptions(BaseModel):
    """What changes the numbers, besides the texts and the model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: Annotated[Annotated[int, Field(ge=2)], BeforeValidator(integral)] | None = Field(
        None,
        description="Truncate every text to this many tokens. Null: a text over the model's limit is "
        "refused (413) with its number.",
    )
    bins: JsonInt = Field(20, ge=2, le=200, description="Histogram bins per head and measure.")
    similarity: bool = Field(True, description="Compute the head-to-head Jensen–Shannon distances and clustering.")


class CorpusRequest(CorpusOptions):
    """A small corpus as a JSON list of texts (at most `corpus_max_texts`, body at most `corpus_max_bytes`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"texts": [EXAMPLE_TEXT, "Where is it? It is here."], "model": "minilm"}]},
    )

    texts: list[str] = Field(min_length=1, description="The texts, one analysis each; blank ones are skipped.")
    model: ModelName = None


class JobError(BaseModel):
    error: str = Field(description="Error code, as in the API's error responses.")
    detail: str = Field(description="What went wrong.")


class CorpusJob(BaseModel):
    """A corpus job's state; also each `progress` event of `GET /api/corpus/{id}/events`."""

    id: str = Field(description="Job id for `GET /api/corpus/{id}` and `/events`.")
    model: str = Field(description="Model the job runs.")
    status: Literal["running", "done", "failed", "cancelled"]
    done: int = Field(description="Texts finished.")
    total: int = Field(description="Texts in the job.")
    elapsed_s: float = Field(description="Seconds since the job started (until it ended).")
    rate: float | None = Field(description="Texts per second so far; null before the first shard ends.")
    eta_s: float | None = Field(description="Estimated seconds left; null when unknown or finished.")
    error: JobError | None = Field(description="Why the job failed; null otherwise.")


class Histogram(BaseModel):
    edges: list[float] = Field(description="bins + 1 bin edges, the same for every head; the last bin is closed.")
    counts: list[list[list[int]]] = Field(description="`[layer][head][bin]`: texts whose value falls in each bin.")


class MeasureSummary(BaseModel):
    """One measure of every head over the corpus (texts where it is undefined, such as no [CLS], left out)."""

    description: str
    count: list[list[int]] = Field(description="`[layer][head]`: texts where the measure is defined.")
    mean: NullableMatrix = Field(description="`[layer][head]` mean over the texts (null if count is 0).")
    std: NullableMatrix = Field(description="`[layer][head]` population standard deviation over the texts.")
    histogram: Histogram


class Clustering(BaseModel):
    method: Literal["average"] = Field(description="SciPy average-linkage hierarchical clustering on `js_distance`.")
    linkage: list[list[float]] = Field(description="SciPy's linkage matrix (n−1 rows of [a, b, distance, size]).")
    order: list[int] = Field(description="Heads (flat index l·H + h) in dendrogram leaf order.")
    clusters: list[int] = Field(description="Flat cluster (1..k) of each head, k = `num_clusters` (at most 8).")
    num_clusters: int
    labels: list[str] = Field(description="`L{layer}H{head}` of each flat index.")


class Similarity(BaseModel):
    heads: list[str] = Field(description="`L{layer}H{head}` of each row and column (flat index l·H + h).")
    texts: int = Field(description="Texts the distances average over: the first `similarity_texts` of the corpus.")
    js_distance: Matrix = Field(
        description="Jensen–Shannon distance (base 2, in [0, 1]) between two heads' attention rows, averaged over "
        "each text's query rows, then over the texts. Symmetric, zero diagonal."
    )
    clustering: Clustering
    embedding: Matrix = Field(description="Classical MDS of `js_distance` to 2-D: an [x, y] per head.")


class CorpusModel(BaseModel):
    name: str
    kind: Literal["encoder", "decoder", "custom"]
    num_layers: int
    num_heads: int
    max_tokens: int = Field(description="The token limit the texts were run with (`max_tokens` or the model's).")
    description: str


class TokenCounts(BaseModel):
    total: int
    min: int
    max: int
    mean: float
    truncated_texts: int


class InputInfo(BaseModel):
    path: str = Field(description="The input file (`api` for `POST /api/corpus`).")
    format: str | None
    field: str
    column: str | None
    limit: int | None


class RunOptions(BaseModel):
    max_tokens: int | None
    batch_tokens: int
    shard_size: int
    bins: int
    similarity: bool
    similarity_texts: int | None


class CorpusSummary(BaseModel):
    """The corpus summary: `summary.json` of `headmap corpus`, and `GET /api/corpus/{id}` once done."""

    complete: bool = Field(description="Always true: a summary exists only once every text is in.")
    version: str = Field(description="Headmap version that computed it.")
    model: CorpusModel
    texts: int
    tokens: TokenCounts
    input: InputInfo
    options: RunOptions
    shards: int
    elapsed_s: float
    table: str | None = Field(description="The per-text table's file name (CLI); null for API jobs.")
    measures: dict[str, MeasureSummary | None] = Field(
        description="Per measure (the `/api/stats` statistics, and head detectors where registered); null when "
        "the measure is undefined for every text (e.g. `to_cls` on GPT-2)."
    )
    similarity: Similarity | None = Field(description="Head similarity; null when not asked for.")
