"""Request fields written once: type, rules and description, shared by every request schema.

The rules are declared in the schema (so OpenAPI states them) and enforced by pydantic; a refusal of
one of them keeps the stable error code the API documents (``empty_text``, ``layer_out_of_range``, ...)
through ``request_error``, for the HTTP handler and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..errors import APIError


def integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; strict models would refuse it, so it becomes 3 (3.5 stays refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer as JSON Schema means it: 3 and 3.0, never "3" or true.
JsonInt = Annotated[int, BeforeValidator(integral)]

#: At least one character that is not whitespace (a JSON Schema pattern matches anywhere in the string).
NON_BLANK = r"\S"

NonBlank = Annotated[str, Field(min_length=1, pattern=NON_BLANK)]
Text = Annotated[
    NonBlank,
    Field(
        description="The text to analyse. Must contain a non-space character.",
        examples=["The cat sat on the mat because it was tired."],
    ),
]
TextPair = Annotated[
    NonBlank | None,
    Field(
        description="Optional second segment (sentence pair), encoded as `[CLS] a [SEP] b [SEP]`. "
        "Must contain a non-space character; omit it or pass null for none.",
        examples=[None],
    ),
]
Target = Annotated[
    NonBlank | None,
    Field(
        description="Encoder–decoder models only (T5, BART, Marian; 422 `target_unsupported` for others): the target "
        "text, teacher-forced into the decoder after its start token. Omitted or null: the start token alone (the "
        "decoder's first step). Must contain a non-space character.",
        examples=[None],
    ),
]
ModelName = Annotated[
    str | None, Field(description="Model name from `GET /api/models`; null for the default.", examples=["minilm"])
]
Truncate = Annotated[
    bool,
    Field(description="Cut the input to the model's `max_tokens` instead of answering 413.", examples=[False]),
]
#: Non-empty list of indices (the upper bound depends on the model, so the service checks it).
IndexList = Annotated[list[JsonInt], Field(min_length=1)]
Layers = Annotated[
    IndexList | None,
    Field(description="Layer indices to return (0-based), at least one; all when null.", examples=[[0, 5]]),
]
Heads = Annotated[
    IndexList | None,
    Field(description="Head indices to return (0-based), at least one; all when null.", examples=[None]),
]


#: Most candidates per position ``predictions.top_k`` may ask for.
TOP_K_MAX = 20
#: Schema bound of ``generate.max_new_tokens``; the server's own bound is ``HEADMAP_GENERATE_MAX_NEW_TOKENS``.
NEW_TOKENS_MAX = 4096


class PredictionOptions(BaseModel):
    """Ask for the model's own predictions (models with a masked-LM or causal-LM head: `can_predict`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: JsonInt = Field(5, ge=1, le=TOP_K_MAX, description="Candidates per position, most probable first.")


class GenerateOptions(BaseModel):
    """Greedy generation before the attention is computed (decoders with a causal-LM head)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: JsonInt = Field(
        ge=1,
        le=NEW_TOKENS_MAX,
        description="Tokens to generate (greedy, stops early at the end-of-text token). At most the server's "
        "`HEADMAP_GENERATE_MAX_NEW_TOKENS` (default 256; 422 `too_many_new_tokens` above it), and prompt + new "
        "tokens at most the model's `max_tokens` (413 `too_many_tokens`).",
        examples=[20],
    )


Predictions = Annotated[
    PredictionOptions | None,
    Field(
        description='`{"top_k": k}` adds `predictions`: for a masked-LM model the top k replacements of every '
        "mask token in the text, for a decoder the top k next tokens after every position, each with its "
        "probability (softmax of the model's logits). Only for models with `can_predict` (422 "
        "`predictions_unsupported` otherwise). Null or omitted: no predictions.",
        examples=[None],
    ),
]
Generate = Annotated[
    GenerateOptions | None,
    Field(
        description='`{"max_new_tokens": n}` continues the text greedily on a decoder with a causal-LM head, '
        "then returns the attention of prompt + generated tokens, computed by one forward pass over the whole "
        "sequence; `generated` marks the new tokens. 422 `generate_unsupported` for other models and with "
        "`text_pair`.",
        examples=[None],
    ),
]


def non_blank_pair(value: str | None) -> str | None:
    """``text_pair`` is optional, but when given it follows the rules of ``text`` (see ``TextPair``)."""
    return value


_BLANK = {"string_too_short", "string_pattern_mismatch"}
_EMPTY_TEXT = {
    "text": "`text` is empty or only whitespace.",
    "text_pair": "`text_pair` is empty or only whitespace; omit it or pass null.",
    "target": "`target` is empty or only whitespace; omit it or pass null.",
}


Message = tuple[str, dict[str, Any]] | None  # a catalogue key and its parameters, for a translated detail


def _known(err: Mapping[str, Any]) -> tuple[str, str, Message] | None:
    """The API's own code, detail and catalogue message for a refused field rule of this module, else None."""
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if not loc:
        return None
    field, kind = loc[-1], err.get("type")
    side = "".join(f"{p}: " for p in loc[:-1] if p in ("a", "b"))  # compare: which input
    if field in _EMPTY_TEXT and kind in _BLANK:
        message: Message = ("error.detail.empty_text", {"field": field})
        if side:  # compare: "a: ..." / "b: ..." in every language
            message = ("error.side", {"side": side.removesuffix(": "), "detail": message})
        return "empty_text", side + _EMPTY_TEXT[field], message
    if field in _EMPTY_TEXT and kind == "string_unicode":  # a lone surrogate ("\ud800") met the pattern check
        return "invalid_text", side + f"`{field}` contains a lone UTF-16 surrogate, which is not a character.", None
    if field in ("layers", "heads") and kind == "too_short":
        return f"{field[:-1]}_out_of_range", f"`{field}` must not be empty; omit it or pass null for all.", None
    return None


def request_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """A 422 for pydantic's ``errors``: the documented code when every error is a known field rule, else
    ``invalid_request`` listing (up to five of) them."""
    known = [_known(e) for e in errors]
    if known and all(known):
        error, detail, message = known[0]  # type: ignore[misc]  # all() above
        return APIError(422, error, detail, message=message)

    def describe(err: Mapping[str, Any]) -> str:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        return f"{loc}: {err.get('msg', 'invalid')}"

    return APIError(422, "invalid_request", "; ".join(describe(e) for e in errors[:5]) or "Invalid request.")
