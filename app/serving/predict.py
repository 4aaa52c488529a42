"""Predictions and greedy generation: what a model with an LM head proposes, and the attention of what it wrote.

``predictions``: the top-k of ``softmax(logits)`` at every mask token (masked-LM models) or after every
position (decoders), from the same forward pass that gives the attention. ``generate``: transformers'
``generate(do_sample=False)``, then the prompt + generated tokens become one ``Encoded`` whose attention is
computed by one forward pass over the whole sequence (so it equals eager attention on that sequence).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import APIError
from ..models import tokentext
from ..models.engine import Encoded, Engine
from ..schemas.attention import AttentionRequest
from ..settings import Settings

#: Decimal places of a candidate's probability.
PROBABILITY_DECIMALS = 6


def lm_of(engine: Engine) -> Any:
    """The engine's LM model (masked-LM or causal-LM head), None when it has none."""
    return getattr(engine, "lm", None)


def check(engine: Engine, req: AttentionRequest, settings: Settings) -> None:
    """Refuse what needs no tokenizing: predictions or generation on a model that cannot, too many new tokens."""
    if getattr(req, "predictions", None) is not None and (not engine.can_predict or lm_of(engine) is None):
        raise APIError(
            422,
            "predictions_unsupported",
            f"Model {engine.name!r} has no masked-LM or causal-LM head (`can_predict` is false), so it cannot "
            "give predictions.",
        )
    if getattr(req, "generate", None) is None:
        return
    assert req.generate is not None
    if engine.kind != "decoder" or lm_of(engine) is None:
        what = "has no causal-LM head" if engine.kind == "decoder" else f"is of kind {engine.kind!r}"
        raise APIError(
            422, "generate_unsupported", f"Model {engine.name!r} {what}; `generate` needs a decoder with one."
        )
    if req.text_pair is not None:
        raise APIError(422, "generate_unsupported", "`generate` continues one text; omit `text_pair`.")
    limit = settings.generate_max_new_tokens
    if req.generate.max_new_tokens > limit:
        raise APIError(
            422,
            "too_many_new_tokens",
            f"`generate.max_new_tokens` is {req.generate.max_new_tokens}; this server generates at most {limit} "
            "(HEADMAP_GENERATE_MAX_NEW_TOKENS).",
        )


def vocab_size(engine: Engine) -> int:
    """The LM head's vocabulary size (0 without an LM head)."""
    return int(getattr(getattr(lm_of(engine), "config", None), "vocab_size", 0) or 0)


def logits_bytes(engine: Engine, num_tokens: int) -> int:
    """What predictions over ``num_tokens`` hold at their peak: the float32 logits [T, V] and the float64
    probabilities of the positions asked (every position of a decoder) [T, V]."""
    return num_tokens * vocab_size(engine) * (4 + 8)


def check_length(engine: Engine, enc: Encoded, req: AttentionRequest, settings: Settings) -> None:
    """413 when prompt + new tokens exceed the model's limit, or the logits would exceed ``predict_max_logits``."""
    total = len(enc) + (req.generate.max_new_tokens if req.generate is not None else 0)
    if req.generate is not None and total > engine.max_tokens:
        raise APIError(
            413,
            "too_many_tokens",
            f"The prompt has {len(enc)} tokens and {req.generate.max_new_tokens} more were asked for; "
            f"{engine.name} takes at most {engine.max_tokens} in all. Shorten the text or ask for fewer tokens.",
        )
    vocab = vocab_size(engine)
    if req.predictions is not None and total * vocab > settings.predict_max_logits:
        raise APIError(
            413,
            "too_many_tokens_for_predictions",
            f"Predictions over {total} tokens would hold {total} × {vocab} logits; this server allows "
            f"{settings.predict_max_logits} (HEADMAP_PREDICT_MAX_LOGITS). Shorten the text.",
        )


def _label(tokenizer: Any, token_id: int) -> str:
    """One token as text, spaces and newlines visible (``␣``, ``↵``)."""
    text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return tokentext._visible(str(text)) or str(tokenizer.convert_ids_to_tokens(token_id))


def predictions(engine: Engine, enc: Encoded, logits: torch.Tensor, top_k: int) -> list[dict[str, Any]]:
    """The ``predictions`` list. logits: [T, V] of the LM model on ``enc``."""
    tok = engine.tokenizer
    if engine.kind == "decoder":
        positions, kind = list(range(len(enc))), "next"
    else:
        mask_id = getattr(tok, "mask_token_id", None)
        positions, kind = [i for i, t in enumerate(enc.input_ids) if mask_id is not None and t == mask_id], "mask"
    if not positions:
        return []
    probs = torch.softmax(logits[positions].double(), dim=-1)  # [P, V]
    top = torch.topk(probs, k=min(top_k, probs.shape[-1]), dim=-1)  # values, indices: [P, k]
    out = []
    for row, pos in enumerate(positions):
        ids = [int(i) for i in top.indices[row]]
        tokens = tok.convert_ids_to_tokens(ids)
        out.append(
            {
                "position": pos,
                "kind": kind,
                "candidates": [
                    {
                        "token_id": i,
                        "token": str(t),
                        "label": _label(tok, i),
                        "probability": round(float(p), PROBABILITY_DECIMALS),
                    }
                    for i, t, p in zip(ids, tokens, top.values[row], strict=True)
                ],
            }
        )
    return out


def extend(engine: Engine, enc: Encoded, text: str, new_ids: list[int]) -> tuple[Encoded, list[bool], str]:
    """``enc`` (of ``text``) followed by the generated ``new_ids``: (the whole sequence, generated flags, the
    generated text). Offsets of generated tokens index into ``text + generated text``."""
    tok = engine.tokenizer
    special_ids = set(tok.all_special_ids) - {tok.unk_token_id}
    prompt_text = tok.decode(enc.input_ids, skip_special_tokens=True)
    kept: list[int] = []  # generated ids that carry text
    offsets: list[list[int] | None] = []
    end = 0
    for i in new_ids:
        if i in special_ids:
            offsets.append(None)
            continue
        kept.append(i)
        full = tok.decode([*enc.input_ids, *kept], skip_special_tokens=True)
        piece = full[len(prompt_text) :] if full.startswith(prompt_text) else tok.decode(kept, skip_special_tokens=True)
        start, end = end, max(end, len(piece))
        offsets.append([len(text) + start, len(text) + end])
    full = tok.decode([*enc.input_ids, *kept], skip_special_tokens=True)
    generated_text = (
        full[len(prompt_text) :] if full.startswith(prompt_text) else tok.decode(kept, skip_special_tokens=True)
    )
    n_text = len(text) + len(generated_text)
    offsets = [None if o is None else [min(o[0], n_text), min(o[1], n_text)] for o in offsets]
    whole = text + generated_text
    tokens = [str(t) for t in tok.convert_ids_to_tokens(new_ids)]
    special = [i in special_ids for i in new_ids]
    segment = enc.segments[-1] if enc.segments else 0
    all_tokens = [*enc.tokens, *tokens]
    all_offsets = [*enc.offsets, *offsets]
    all_segments = [*enc.segments, *([segment] * len(new_ids))]
    all_special = [*enc.special, *special]
    texts = [whole, ""] if segment == 0 else [text, whole]
    labels = tokentext.token_labels(texts, all_tokens, all_offsets, all_segments)
    # Word ids of the new tokens from whitespace chunks (the tokenizer's word ids cover only what it tokenized),
    # numbered after the prompt's; a token continuing the prompt's last word keeps that word's id.
    chunked = tokentext.word_ids(texts, all_tokens, all_offsets, all_segments, all_special, None)
    n = len(enc)
    last_prompt = next((k for k in range(n - 1, -1, -1) if enc.word_ids[k] is not None), None)
    next_id = max((w for w in enc.word_ids if w is not None), default=-1) + 1
    mapping: dict[int, int] = {}
    if last_prompt is not None and chunked[last_prompt] is not None:
        mapping[chunked[last_prompt]] = enc.word_ids[last_prompt]  # type: ignore[index, assignment]
    new_words: list[int | None] = []
    for w in chunked[n:]:
        if w is None:
            new_words.append(None)
            continue
        if w not in mapping:
            mapping[w], next_id = next_id, next_id + 1
        new_words.append(mapping[w])
    unk = tok.unk_token_id
    out = Encoded(
        input_ids=[*enc.input_ids, *new_ids],
        token_type_ids=None if enc.token_type_ids is None else [*enc.token_type_ids, *([segment] * len(new_ids))],
        tokens=all_tokens,
        offsets=all_offsets,
        special=all_special,
        unknown=[*enc.unknown, *(unk is not None and i == unk for i in new_ids)],
        segments=all_segments,
        truncated=enc.truncated,
        labels=labels,
        word_ids=[*enc.word_ids, *new_words],
    )
    return out, [False] * n + [True] * len(new_ids), generated_text


def generate(engine: Engine, enc: Encoded, text: str, max_new_tokens: int) -> tuple[Encoded, list[bool], str]:
    """Greedy generation (blocking: call from a worker thread), then ``extend``."""
    new_ids = engine.generate(enc, max_new_tokens)  # type: ignore[attr-defined]  # HFEngine: check() made sure
    return extend(engine, enc, text, new_ids)
