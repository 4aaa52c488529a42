"""Bring-your-own models: tiny random BERT, RoBERTa, DistilBERT and GPT-2, through ``load_hf`` and the app.

The models come from ``tests/tiny_models.py`` (session fixture ``tiny_model_paths``); nothing is downloaded.
"""

from __future__ import annotations

import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from headmap.models.engine import Encoded, Engine
from headmap.models.hf import HFEngine, load_hf
from tests.conftest import TINY_NAMES
from tests.tiny_models import FAMILIES, HEADS, LAYERS, POSITIONS

KIND = {"bert": "encoder", "roberta": "encoder", "distilbert": "encoder", "gpt2": "decoder"}
# RoBERTa's position ids start after the padding index (1), so two positions are never usable.
MAX_TOKENS = {"bert": POSITIONS, "roberta": POSITIONS - 2, "distilbert": POSITIONS, "gpt2": POSITIONS}
WORDPIECE = {"bert", "distilbert"}

OFFSET_TEXTS = {
    "ascii": "The cat sat on the mat, because it was tired!",
    "spaces": "  Where   is it?\tIt is here.  ",
    "cjk": "你好世界",
    "mixed": "I said 你好世界 to the cat.",
    "emoji": "Nice 👍🏽 work",
    "zwj": "family: 👩‍👩‍👧!",
    "combining": "Cafe\u0301 e\u0301te\u0301 na\u0308ive",
    "precomposed": "café naïve résumé",
}
BATCH_TEXTS = ["Hi.", "The cat sat on the mat because it was tired.", "Where is it? It is here."]


@pytest.fixture(scope="module")
def engines(tiny_model_paths: dict[str, Path]) -> dict[str, HFEngine]:
    return {family: load_hf(TINY_NAMES[family], path) for family, path in tiny_model_paths.items()}


# -- load_hf ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_hf_metadata(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    assert (e.kind, e.num_layers, e.num_heads, e.max_tokens) == (KIND[family], LAYERS, HEADS, MAX_TOKENS[family])
    assert e.uses_token_types == (family == "bert")


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_rows_determinism(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    enc = e.encode(OFFSET_TEXTS["ascii"])
    t = len(enc)
    assert len(enc.tokens) == len(enc.offsets) == len(enc.special) == len(enc.segments) == t
    attn = e.forward([enc])[0]
    assert attn.shape == (LAYERS, HEADS, t, t) and attn.dtype == torch.float32
    assert torch.isfinite(attn).all() and (attn >= 0).all()
    np.testing.assert_allclose(attn.sum(-1).numpy(), 1.0, atol=1e-4)
    assert torch.equal(attn, e.forward([e.encode(OFFSET_TEXTS["ascii"])])[0])
    # Random weights still give heads that differ from each other (the model really ran).
    assert (attn[0, 0] - attn[-1, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_flagged(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    enc = e.encode("The cat sat.")
    specials = set(e.tokenizer.all_special_tokens)
    assert enc.special == [tok in specials for tok in enc.tokens]
    for off, sp in zip(enc.offsets, enc.special, strict=True):
        assert (off is None) == sp
    if family in WORDPIECE:
        assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    elif family == "roberta":
        assert enc.tokens[0] == "<s>" and enc.tokens[-1] == "</s>"
    else:
        assert not any(enc.special)  # GPT-2 adds no special tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_compute_equals_encode(engines: dict[str, HFEngine], family: str) -> None:
    """The corpus's one-call tokenizing gives what `encode` gives for ids, token types, tokens and special
    flags (a typed [SEP] included); a text over the limit is None, for `encode` to truncate or refuse."""
    e = engines[family]
    texts = [*OFFSET_TEXTS.values(), "The cat [SEP] sat.", "word " * (e.max_tokens + 5)]
    quick = e.encode_compute(texts)
    assert quick[-1] is None
    for text, got in zip(texts[:-1], quick[:-1], strict=True):
        want = e.encode(text)
        assert got is not None
        assert (got.input_ids, got.token_type_ids, got.tokens, got.special, got.unknown) == (
            want.input_ids, want.token_type_ids, want.tokens, want.special, want.unknown
        )  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_mask_is_a_triangle(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    attn = e.forward([e.encode(OFFSET_TEXTS["ascii"])])[0]  # (L, H, T, T)
    upper = torch.triu(torch.ones(attn.shape[-2:], dtype=torch.bool), diagonal=1)
    if family == "gpt2":
        assert (attn[..., upper] == 0).all()
        assert (attn[..., 0, 0] == 1).all()  # the first token can only see itself
    else:
        assert attn[..., upper].sum() > 1.0


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_sentence_pair(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    text, pair = "Where is it?", "It is here."
    enc = e.encode(text, pair)
    assert 0 in enc.segments and 1 in enc.segments and enc.segments == sorted(enc.segments)
    if family == "bert":
        assert enc.token_type_ids is not None and enc.token_type_ids[-1] == 1
    for off, seg in zip(enc.offsets, enc.segments, strict=True):
        if off is not None:
            assert 0 <= off[0] <= off[1] <= len(pair if seg else text)
    assert e.forward([enc])[0].shape[-1] == len(enc)


# -- offsets ----------------------------------------------------------------------------------------


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte (written out independently)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def fold(s: str) -> str:
    """What an uncased WordPiece tokenizer sees: lowercased, accents (combining marks) removed."""
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


def check_offsets(e: Engine, family: str, text: str, enc: Encoded) -> None:
    spans: list[tuple[int, int, list[str], bool]] = []  # (start, end, tokens of that span, any unknown)
    for tok, off, sp, unk in zip(enc.tokens, enc.offsets, enc.special, enc.unknown, strict=True):
        if sp:
            continue
        assert off is not None, f"{tok!r} has no offsets"
        start, end = off
        assert 0 <= start <= end <= len(text), (tok, off)
        if spans:
            prev_start, prev_end, prev_toks, prev_unk = spans[-1]
            assert start >= prev_start, f"{tok!r} {off} starts before the previous token {spans[-1][:2]}"
            if start < prev_end and family not in WORDPIECE:
                # Byte-level BPE can split one character's UTF-8 bytes over two tokens; both spans then
                # hold that character. Merge such tokens into one span and check their bytes together.
                spans[-1] = (prev_start, max(prev_end, end), [*prev_toks, tok], prev_unk or unk)
                continue
            assert start >= prev_end, f"{tok!r} {off} overlaps the previous token {spans[-1][:2]}"
        spans.append((start, end, [tok], unk))

    covered = [False] * len(text)
    for start, end, toks, unk in spans:
        piece = text[start:end]
        covered[start:end] = [True] * (end - start)
        if family in WORDPIECE:
            assert piece and not any(c.isspace() for c in piece), (toks, piece)
            if not unk:
                assert fold(piece) == toks[0].removeprefix("##"), (toks, piece)
        else:
            # The bytes the tokens stand for are the UTF-8 of the span (RoBERTa trims spaces off spans,
            # so a lone space token has an empty span).
            raw = bytes(byte_decoder()[c] for tok in toks for c in tok).decode("utf-8")
            assert raw.strip() == piece.strip(), (toks, piece)
            assert piece or not raw.strip(), f"{toks} cover no text"
    # Everything not covered is something the tokenizer drops: spaces, and for uncased WordPiece the
    # accents it strips.
    droppable = {"Mn", "Cc", "Cf"} if family in WORDPIECE else set()
    for c, cov in zip(text, covered, strict=True):
        assert cov or c.isspace() or unicodedata.category(c) in droppable, f"{c!r} of {text!r} is not covered"
    # The covered spans, in order, spell the text.
    squash = fold if family in WORDPIECE else (lambda s: s)
    rebuilt = "".join(squash(text[s:e]) for s, e, _, _ in spans)
    assert "".join(rebuilt.split()) == "".join(squash(text).split())


@pytest.mark.parametrize("name", list(OFFSET_TEXTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_offsets_map_back_to_text(engines: dict[str, HFEngine], family: str, name: str) -> None:
    e, text = engines[family], OFFSET_TEXTS[name]
    enc = e.encode(text)
    check_offsets(e, family, text, enc)
    if family in WORDPIECE and name in {"ascii", "cjk", "combining", "precomposed"}:
        assert not any(enc.unknown)  # the tiny vocabulary covers these, so the content check really ran


def only_segment(enc: Encoded, segment: int) -> Encoded:
    """``enc`` with the other segment's tokens treated as special (skipped by ``check_offsets``)."""
    other = [s != segment for s in enc.segments]
    return replace(
        enc,
        offsets=[None if o else off for off, o in zip(enc.offsets, other, strict=True)],
        special=[sp or o for sp, o in zip(enc.special, other, strict=True)],
    )


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_offsets_of_pair_index_into_text_pair(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    text, pair = OFFSET_TEXTS["emoji"], OFFSET_TEXTS["combining"]
    enc = e.encode(text, pair)
    check_offsets(e, family, text, only_segment(enc, 0))
    check_offsets(e, family, pair, only_segment(enc, 1))


# -- micro-batching ---------------------------------------------------------------------------------


def assert_batch_equals_single(e: Engine, items: list[Encoded]) -> float:
    assert len({len(x) for x in items}) == len(items), "want different lengths, so there is padding"
    batched = e.forward(items)
    worst = 0.0
    for enc, got in zip(items, batched, strict=True):
        alone = e.forward([enc])[0]
        assert got.shape == alone.shape == (e.num_layers, e.num_heads, len(enc), len(enc))
        diff = (got - alone).abs().max().item()
        assert diff <= 1e-5, f"{e.name}: batched differs from unbatched by {diff}"
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched(engines: dict[str, HFEngine], family: str) -> None:
    e = engines[family]
    assert_batch_equals_single(e, [e.encode(t) for t in BATCH_TEXTS])
    if family != "gpt2":  # a pair in the batch: token types are padded too
        assert_batch_equals_single(e, [e.encode("Hi.", "Yes."), e.encode(BATCH_TEXTS[1], "It is here.")])


@pytest.mark.parametrize("name", ["minilm", "custom"])
def test_batched_equals_unbatched_builtin(registry, name: str) -> None:  # type: ignore[no-untyped-def]
    e = registry.get(name)
    assert_batch_equals_single(e, [e.encode(t) for t in BATCH_TEXTS])
    assert_batch_equals_single(e, [e.encode("Where is it?", "It is here."), e.encode("Hi.")])


# -- through the app --------------------------------------------------------------------------------


def test_ready_lists_failures_and_others_serve(tiny_client: TestClient) -> None:
    r = tiny_client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert sorted(body["models"]) == sorted(TINY_NAMES.values())
    assert set(body["failed"]) == {"missing", "broken"}
    assert "does not exist" in body["failed"]["missing"]
    r = tiny_client.post("/api/attention", json={"text": "hi", "model": "broken"})
    assert r.status_code == 404
    assert r.json()["error"] == "model_not_found" and "failed to load" in r.json()["detail"]


def test_api_models_lists_tiny_models(tiny_client: TestClient) -> None:
    body = tiny_client.get("/api/models").json()
    assert body["default"] == "tbert"
    info = {m["name"]: m for m in body["models"]}
    assert set(info) == set(TINY_NAMES.values())
    for family, name in TINY_NAMES.items():
        m = info[name]
        assert (m["kind"], m["num_layers"], m["num_heads"], m["max_tokens"]) == (
            KIND[family],
            LAYERS,
            HEADS,
            MAX_TOKENS[family],
        )
        assert m["description"]


@pytest.mark.parametrize("family", FAMILIES)
def test_api_attention(tiny_client: TestClient, engines: dict[str, HFEngine], family: str) -> None:
    name, text = TINY_NAMES[family], OFFSET_TEXTS["mixed"]
    r = tiny_client.post("/api/attention", json={"text": text, "model": name})
    assert r.status_code == 200, r.text
    body = r.json()
    enc = engines[family].encode(text)
    assert body["model"] == name and body["kind"] == KIND[family]
    assert body["tokens"] == enc.tokens and body["offsets"] == enc.offsets and body["special"] == enc.special
    attn = np.array(body["attention"])
    t = len(body["tokens"])
    assert attn.shape == (LAYERS, HEADS, t, t)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=t * 5e-5 + 1e-6)  # 4-decimal rounding of T terms
    expected = engines[family].forward([enc])[0].numpy()  # the same weights as a separately loaded copy
    np.testing.assert_allclose(attn, expected, atol=5e-5 + 1e-6, rtol=0)
    if family == "gpt2":
        assert (np.triu(attn, k=1) == 0).all()
    again = tiny_client.post("/api/attention", json={"text": text, "model": name})
    assert again.content == r.content


@pytest.mark.parametrize("family", FAMILIES)
def test_api_truncates_to_max_tokens(tiny_client: TestClient, family: str) -> None:
    name, text = TINY_NAMES[family], " ".join(["the cat sat on the mat."] * 20)
    assert tiny_client.post("/api/attention", json={"text": text, "model": name}).status_code == 413
    body = tiny_client.post("/api/attention", json={"text": text, "model": name, "truncate": True}).json()
    assert body["truncated"] is True and len(body["tokens"]) == MAX_TOKENS[family]
    assert np.array(body["attention"]).shape[-1] == MAX_TOKENS[family]


def test_api_concurrent_requests_batch_correctly(tiny_client: TestClient) -> None:
    """Concurrent requests may share a padded batch; each answer equals the one it gets alone."""
    jobs = [(TINY_NAMES[f], t) for f in FAMILIES for t in BATCH_TEXTS]

    def ask(job: tuple[str, str]) -> np.ndarray:
        r = tiny_client.post("/api/attention", json={"text": job[1], "model": job[0]})
        assert r.status_code == 200
        return np.array(r.json()["attention"])

    alone = [ask(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(ask, jobs * 2))
    for i, got in enumerate(together):
        np.testing.assert_allclose(got, alone[i % len(jobs)], atol=1.01e-4, rtol=0)


@pytest.mark.parametrize("name", list(OFFSET_TEXTS))
def test_minilm_offsets_map_back_to_text(registry, name: str) -> None:  # type: ignore[no-untyped-def]
    """The same offset checks on the real minilm vocabulary (uncased WordPiece, 30k tokens)."""
    e, text = registry.get("minilm"), OFFSET_TEXTS[name]
    check_offsets(e, "bert", text, e.encode(text))
