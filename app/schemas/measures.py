"""Pydantic schemas of `/api/heads` (head detectors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..attention.definitions import DETECTORS
from ..models.engine import Kind
from .attention import EXAMPLE_TEXT
from .fields import JsonInt, ModelName, NonBlank, TextPair, Truncate
from .insight import Matrix, MeasureDefinition


def _detector_text(name: str) -> str:
    d = DETECTORS[name]
    return f"{d['title']}: {d['formula']} ({d['reference']})"


class HeadsRequest(BaseModel):
    """Which model to classify the heads of, and on what input."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"model": "minilm", "text": EXAMPLE_TEXT, "seed": 0}]},
    )

    model: ModelName = None
    text: NonBlank | None = Field(
        None,
        description="Input for the positional detectors (previous, next, self, first token, [CLS]/[SEP]). "
        "Null: they run on the repeated random sequence too.",
        examples=[EXAMPLE_TEXT],
    )
    text_pair: TextPair = None
    truncate: Truncate = False
    seed: JsonInt = Field(0, ge=0, le=2**32 - 1, description="Seed of the random token sequence.", examples=[0])
    random_length: JsonInt = Field(
        20,
        ge=2,
        le=256,
        description="Random tokens in the sequence; it is shown twice (2 × this plus the model's special tokens, "
        "which must fit `max_tokens`).",
        examples=[20],
    )


class DetectorScores(BaseModel):
    """One `[layer][head]` matrix per detector (0..1, higher = more of that type)."""

    previous_token: Matrix | None = Field(description=_detector_text("previous_token") + " Null when T = 1.")
    next_token: Matrix | None = Field(description=_detector_text("next_token") + " Null when T = 1.")
    self: Matrix = Field(description=_detector_text("self"))
    first_token: Matrix = Field(description=_detector_text("first_token"))
    cls_sep: Matrix | None = Field(description=_detector_text("cls_sep"))
    duplicate_token: Matrix | None = Field(description=_detector_text("duplicate_token"))
    induction: Matrix | None = Field(description=_detector_text("induction"))


class HeadsResponse(BaseModel):
    """Head-type scores of every layer × head."""

    model: str = Field(examples=["minilm"])
    kind: Kind = Field(examples=["encoder"])
    num_layers: int = Field(examples=[6])
    num_heads: int = Field(examples=[12])
    tokens: list[str] = Field(description="Tokens the positional detectors ran on (`text`, or the random sequence).")
    random_tokens: list[str] = Field(
        description="The repeated random sequence the duplicate-token and induction detectors ran on."
    )
    seed: JsonInt = Field(examples=[0])
    scores: DetectorScores
    definitions: dict[str, MeasureDefinition] = Field(description="Each detector's formula and reference.")
