"""Property-based tests: hostile text and junk bodies never get a 5xx, and answers stay well-formed."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ERROR_KEYS = {"error", "detail"}

#: Pieces that break naive text handling: emoji ZWJ sequences and modifiers, RTL scripts and
#: bidi controls, NUL and other controls, BOM, zero-width characters, combining marks, CJK, Zalgo.
HOSTILE = [
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "👨🏽‍💻",
    "🧑‍🤝‍🧑",
    "👍🏽",
    "🇺🇳",
    "#️⃣",
    "مرحبا بالعالم",
    "שָׁלוֹם",
    "\u202eevil\u202c",
    "\u200f",
    "\u200e",
    "\u2067x\u2069",
    "\x00",
    "\x01\x02\x7f",
    "\r\n",
    "\t",
    "\ufeff",
    "\u200b",
    "\u2060",
    "\ufffd",
    "\uffff",
    "e\u0301",
    "\u0301\u0302\u0303",
    "Z\u0351\u0364\u036b\u0350\u0340a\u0352\u0367\u0300l\u0309g\u0313o",
    "你好世界",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "<script>alert(1)</script>",
    "'; DROP TABLE x; --",
    "%00",
    "../../etc/passwd",
]

# Every code point, surrogates included: ``json.dumps`` writes lone ones as "\udXXX" escapes.
any_char = st.characters(codec=None, exclude_categories=())
texts = st.one_of(
    st.text(any_char, max_size=200),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(any_char, max_size=8)), max_size=30).map("".join),
)


def _check(r: Any, body: dict[str, Any]) -> None:
    assert r.status_code < 500, r.text[:500]
    data = r.json()
    if r.status_code != 200:
        assert set(data) == ERROR_KEYS and data["error"] and data["detail"]
        if any(0xD800 <= ord(c) <= 0xDFFF for c in body["text"] + (body.get("text_pair") or "")):
            assert data["error"] in ("invalid_text", "empty_text"), data
        return
    t = len(data["tokens"])
    assert len(data["offsets"]) == len(data["special"]) == len(data["segments"]) == t
    for off, seg in zip(data["offsets"], data["segments"], strict=True):
        if off is not None:
            source = body["text"] if seg == 0 else body["text_pair"]
            assert 0 <= off[0] <= off[1] <= len(source)
    if data["attention"] is not None:
        attn = data["attention"]
        assert len(attn) == len(data["layers"]) and len(attn[0]) == len(data["heads"])
        assert all(len(row) == t and all(math.isfinite(x) for x in row) for row in attn[0][0])
    else:
        assert data["attention_compact"]["shape"][-2:] == [t, t]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=texts,
    pair=st.none() | texts,
    model=st.sampled_from(["minilm", "custom"]),
    truncate=st.booleans(),
    compact=st.booleans(),
    ascii_escapes=st.booleans(),
)
def test_arbitrary_unicode_never_5xx(
    client: TestClient, text: str, pair: str | None, model: str, truncate: bool, compact: bool, ascii_escapes: bool
) -> None:
    body: dict[str, Any] = {"text": text, "model": model, "truncate": truncate}
    if pair is not None:
        body["text_pair"] = pair
    # Small answers: the whole pass still runs, only the first layer and head are encoded.
    body |= {"encoding": "compact"} if compact else {"layers": [0], "heads": [0]}
    # ensure_ascii=True sends every non-ASCII character, lone surrogates included, as \\uXXXX escapes;
    # otherwise raw UTF-8 (with lone surrogates as their invalid 3-byte forms, which is not valid JSON text).
    raw = json.dumps(body, ensure_ascii=ascii_escapes).encode("utf-8", "surrogatepass")
    r = client.post("/api/attention", content=raw, headers={"content-type": "application/json"})
    if not ascii_escapes and any(0xD800 <= ord(c) <= 0xDFFF for c in text + (pair or "")):
        assert r.status_code < 500 and set(r.json()) == ERROR_KEYS  # undecodable bytes: a 4xx
        return
    _check(r, body)


@settings(max_examples=40, deadline=None)
@given(raw=st.binary(max_size=300) | st.text(any_char, max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_junk_bodies_get_json_4xx(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/attention", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text[:300]
    assert set(r.json()) == ERROR_KEYS


def test_lone_surrogate_escapes_in_raw_body(client: TestClient) -> None:
    for escaped in (r"\ud800", r"\udfff", r"a\ud83d", r"\ude00b", r"\ud800\ud800"):
        raw = b'{"text": "x ' + escaped.encode() + b'"}'
        r = client.post("/api/attention", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_text", r.text


def test_ten_thousand_combining_marks(client: TestClient) -> None:
    for text in ("a" + "\u0301" * 10_000, "\u0301" * 10_000, ("e" + "\u0300\u0301\u0302") * 2_500):
        for model in ("minilm", "custom"):
            for truncate in (False, True):
                body = {"text": text, "model": model, "truncate": truncate, "encoding": "compact"}
                r = client.post("/api/attention", json=body)
                _check(r, body)


def test_emoji_zwj_rtl_and_nul(client: TestClient) -> None:
    body = {"text": "".join(HOSTILE), "text_pair": "\x00مرحبا 👩‍👩‍👧‍👦", "layers": [0], "heads": [0]}
    r = client.post("/api/attention", json=body)
    assert r.status_code == 200
    _check(r, body)
