"""Readable token labels and word groups from the source text, for every script.

``token_labels``: what each token covers in the text, so byte-level BPE (GPT-2, RoBERTa, Qwen, Llama 3) and
SentencePiece tokens read as text instead of ``æ³¨æĦı`` or ``▁``:

- a token with offsets shows the characters it covers; a space it carries (``Ġis``, ``▁is``, or offsets that
  include the space) is shown as ``␣`` (U+2423 OPEN BOX). Not ``·``: the middle dot is a real character of
  Chinese text (the 间隔号 in 达·芬奇), ``␣`` never is. Newlines and tabs show as ``↵`` and ``⇥``;
- a character whose UTF-8 bytes are split across tokens (byte-level BPE, byte fallback) is shown whole on the
  first token holding any of its bytes; a later token that only carries the rest of it shows ``…``, and one
  that carries the rest and then more characters shows ``…`` before them (``…意``). So reading the labels in
  order gives the text back once, and no token pretends to be a character it only has a byte of;
- a token that is only a space marker (SentencePiece's ``▁`` before a character it has no piece for, also
  when that space was prepended by the tokenizer and is not in the text) shows ``␣``;
- tokens without offsets (``[CLS]``, ``<s>``) keep the tokenizer's own string.

``word_ids``: an int per token, equal for the tokens of one word, null for special tokens, punctuation and
spaces. Words come from the tokenizer's own word ids (its pre-tokenizer), except in runs of Chinese characters,
where they come from jieba over the text's characters, so 注意力 / 机制 group the same way whether the model
has one token per character (a Chinese BERT), several characters per token, or bytes split across tokens.
A token that covers parts of two words joins them (a token cannot be in two words). A word never spans two
segments. A token that is only a space belongs to the next token's word when the tokenizer puts them in one
word (SentencePiece ``▁`` + ``注意``), else to none.
"""

from __future__ import annotations

import logging
import re
import string
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

#: Shown for a space a token carries; see the module docstring for why not "·".
SPACE = "␣"
#: Shown for the rest of a character whose first bytes are on an earlier token.
CONTINUATION = "…"
_VISIBLE = {" ": SPACE, "\n": "↵", "\r": "↵", "\t": "⇥"}
#: How byte-level BPE (GPT-2's byte-to-unicode map) and SentencePiece spell whitespace inside a token string.
_MARKERS = {"Ġ": SPACE, "▁": SPACE, "Ċ": "↵", "ĉ": "⇥", "č": "↵"}
#: Above this share of unknown tokens, the page and the report say the model does not know the text's script.
UNKNOWN_WARNING = 0.1
_ASCII_PUNCT = frozenset(string.punctuation)

_jieba_lock = threading.Lock()
_jieba_ready = False


def is_han(ch: str) -> bool:
    """A Chinese character (CJK unified ideographs, extensions A–F, compatibility ideographs, 〇)."""
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x2FA1F
        or o == 0x3007
    )


def is_punct(ch: str) -> bool:
    """Punctuation never belongs to a word: Unicode P* (。，、！？「」…) and every ASCII punctuation mark."""
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


#: str.translate table: every whitespace character to its visible marker.
_VISIBLE_TABLE = {o: _VISIBLE.get(chr(o), SPACE) for o in range(0x3001) if chr(o).isspace()}
_MARKER_CHARS = "".join(_MARKERS)
_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_HAN_RUN = re.compile(f"[{_HAN}]+")


def _visible(text: str) -> str:
    return text.translate(_VISIBLE_TABLE)


def _marker_only(token: str) -> bool:
    return bool(token) and not token.strip(_MARKER_CHARS)


def token_labels(
    texts: Sequence[str], tokens: Sequence[str], offsets: Sequence[Sequence[int] | None], segments: Sequence[int]
) -> list[str]:
    """One label per token (see the module docstring). ``texts[g]`` is the text segment ``g``'s offsets index."""
    labels: list[str] = []
    claimed, segment = 0, -1  # characters of the current segment already shown on a label
    for token, off, g in zip(tokens, offsets, segments, strict=True):
        if off is None:
            labels.append(token)
            continue
        if g != segment:
            claimed, segment = 0, g
        text = texts[g]
        start, end = int(off[0]), int(off[1])
        new = max(start, claimed)
        body = text[new:end]
        continued = start < claimed  # starts inside a character an earlier token already showed
        if body and body.isspace():
            labels.append((CONTINUATION if continued else "") + _visible(body))
            claimed = max(claimed, end)
            continue
        if _marker_only(token):  # "▁" / "Ġ" alone, over no text or over a character it does not hold
            labels.append("".join(_MARKERS[c] for c in token))
            continue
        lead = len(body) - len(body.lstrip())
        # offsets that take in the space (GPT-2), or trimmed ones (RoBERTa) after a real space in the text
        space = _visible(body[:lead]) or (
            SPACE if token[:1] in ("Ġ", "▁") and start > 0 and not continued and text[start - 1].isspace() else ""
        )
        body = body[lead:]
        if not body and start >= end:  # empty offsets: show the token string with whitespace made visible
            labels.append("".join(_MARKERS.get(c, c) for c in token))
            continue
        prefix = (CONTINUATION if continued else "") + space
        labels.append(prefix + _visible(body) if body or prefix else CONTINUATION)
        claimed = max(claimed, end)
    return labels


def _jieba() -> Any:
    """jieba, its dictionary loaded (about a second, once per process; the lock makes other threads wait)."""
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." is not worth a log line
                jieba.initialize()
                _jieba_ready = True
    return jieba


def preload() -> None:
    """Load jieba's dictionary in a background thread, so the first Chinese text does not wait for it."""
    if not _jieba_ready:
        threading.Thread(target=_jieba, name="headmap-jieba", daemon=True).start()


def _jieba_words(run: str) -> list[tuple[int, int]]:
    """``[(start, end)]`` of jieba's words in a run of Chinese characters (default dictionary, HMM on)."""
    return [(s, e) for _, s, e in _jieba().tokenize(run)]


def chinese_words(text: str) -> dict[int, int]:
    """Character index -> start index of its jieba word, for every Chinese character of ``text``."""
    out: dict[int, int] = {}
    for run in _HAN_RUN.finditer(text):
        i = run.start()
        for s, e in _jieba_words(run.group()):
            for k in range(i + s, i + e):
                out[k] = i + s
    return out


def _find(parent: dict[object, object], x: object) -> object:
    root = x
    while parent.setdefault(root, root) != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def word_ids(
    texts: Sequence[str],
    tokens: Sequence[str],
    offsets: Sequence[Sequence[int] | None],
    segments: Sequence[int],
    special: Sequence[bool],
    tokenizer_words: Sequence[int | None] | None,
) -> list[int | None]:
    """One word id per token (see the module docstring), numbered 0, 1, … in order of first appearance.

    ``tokenizer_words``: the fast tokenizer's ``word_ids()`` (per segment, null for special tokens), or None
    when the tokenizer has none; then words are the text's whitespace-separated chunks.
    """
    han = [chinese_words(t) if _HAN_RUN.search(t) else {} for t in texts]
    chunks: dict[int, list[int]] = {}  # only when the tokenizer gives no word ids
    parent: dict[object, object] = {}
    units: list[list[object]] = []
    for i, (token, off, g, sp) in enumerate(zip(tokens, offsets, segments, special, strict=True)):
        mine: dict[object, None] = {}  # ordered, without repeats
        if off is not None and not sp and not _marker_only(token):
            tw = tokenizer_words[i] if tokenizer_words is not None else None
            zh, start, end = han[g], int(off[0]), int(off[1])
            text = texts[g]
            if tw is not None and text[start:end].isalnum() and not (zh and _HAN_RUN.search(text, start, end)):
                mine[("tok", g, tw)] = None  # the common case: letters and digits of one tokenizer word
            for k in range(start, end) if not mine else ():
                c = text[k]
                if c.isspace() or is_punct(c):
                    continue
                if k in zh:
                    mine[("zh", g, zh[k])] = None
                elif tw is not None:
                    mine[("tok", g, tw)] = None
                else:
                    if g not in chunks:
                        chunks[g] = _chunks(text)
                    mine[("chunk", g, chunks[g][k])] = None
        ordered = list(mine)
        for u in ordered[1:]:  # a token in two words joins them
            parent[_find(parent, u)] = _find(parent, ordered[0])
        units.append(ordered)
    keys: list[object | None] = [_find(parent, u[0]) if u else None for u in units]
    # A token that is only a space joins the next token's word when the tokenizer says they are one word.
    for i in range(len(keys) - 2, -1, -1):
        off = offsets[i]
        if keys[i] is not None or off is None or special[i] or keys[i + 1] is None or tokenizer_words is None:
            continue
        tw = tokenizer_words[i]
        covered = texts[segments[i]][int(off[0]) : int(off[1])]
        spaces = _marker_only(tokens[i]) or not covered.strip()
        if spaces and tw is not None and tw == tokenizer_words[i + 1] and segments[i] == segments[i + 1]:
            keys[i] = keys[i + 1]
    numbers: dict[object, int] = {}
    return [None if k is None else numbers.setdefault(k, len(numbers)) for k in keys]


def _chunks(text: str) -> list[int]:
    """Character index -> index of its whitespace-separated chunk."""
    out, n, prev_space = [], -1, True
    for c in text:
        space = c.isspace()
        if not space and prev_space:
            n += 1
        out.append(max(n, 0))
        prev_space = space
    return out


def unknown_share(unknown: Sequence[bool], special: Sequence[bool]) -> tuple[int, float]:
    """``(count, share)`` of unknown tokens among the text's tokens (special tokens not counted)."""
    text_tokens = sum(1 for s in special if not s)
    count = sum(1 for u, s in zip(unknown, special, strict=True) if u and not s)
    return count, (count / text_tokens if text_tokens else 0.0)
