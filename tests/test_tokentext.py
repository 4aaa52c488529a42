"""Token labels and word ids on three tokenizer families built here, each checked against hand-worked expectations.

Each tokenizer is made so its split of the text is known in advance (a hand-written WordPiece vocabulary, byte-level
BPE merges chosen to cut characters mid-way, a Unigram vocabulary that allows one segmentation), then run through
``Engine.encode`` exactly as a served model would be. The Chinese words are what jieba makes of these texts
(checked first, on their own), written out by hand.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headmap.models import tokentext
from headmap.models.engine import Encoded, Engine


def encode(tokenizer: object, text: str, pair: str | None = None) -> Encoded:
    engine = Engine(
        name="t", kind="encoder", description="", num_layers=1, num_heads=1, max_tokens=512, tokenizer=tokenizer,
        family="test", num_kv_heads=1, head_dim=1, dtype="float32", num_parameters=0, can_predict=False, source="test",
    )  # fmt: skip
    return engine.encode(text, pair)


def test_jieba_segments_the_test_sentences_as_written_here() -> None:
    """The word groups expected below rest on these segmentations (jieba 0.42, default dictionary)."""
    import jieba

    assert jieba.lcut("注意力机制是一种技术") == ["注意力", "机制", "是", "一种", "技术"]
    assert jieba.lcut("注意力机制") == ["注意力", "机制"]
    # and tokentext maps them onto characters, runs of Chinese only, offsets relative to the whole text
    assert tokentext.chinese_words("ab 注意力机制!") == {3: 3, 4: 3, 5: 3, 6: 6, 7: 6}


# -- a Chinese BERT: WordPiece, one token per Chinese character ------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece() -> object:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"注意力机制是一种技术。", "attention", "work", "##s"]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def test_wordpiece_chinese_bert(wordpiece: object) -> None:
    enc = encode(wordpiece, "注意力机制是一种技术。Attention works 😀", "注意力！")
    # fmt: off
    assert enc.tokens == ["[CLS]", *"注意力机制是一种技术。", "attention", "work", "##s", "[UNK]", "[SEP]",
                          "注", "意", "力", "[UNK]", "[SEP]"]
    assert enc.labels == ["[CLS]", *"注意力机制是一种技术。", "Attention", "work", "s", "😀", "[SEP]",
                          "注", "意", "力", "！", "[SEP]"]
    # 注意力 / 机制 / 是 / 一种 / 技术, 。 none; Attention; work+s; the emoji (an [UNK], still a word of its own);
    # the pair's 注意力 is a new word (never across segments); ！ is punctuation even when unknown.
    assert enc.word_ids == [None, 0, 0, 0, 1, 1, 2, 3, 3, 4, 4, None, 5, 6, 6, 7, None,
                            8, 8, 8, None, None]
    # fmt: on


# -- byte-level BPE (GPT-2 / Qwen / Llama 3 style) with characters cut between tokens ---------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (written out from the GPT-2 paper's released encoder)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@pytest.fixture(scope="module")
def byte_bpe() -> object:
    from transformers import GPT2TokenizerFast

    b2u = bytes_to_unicode()

    def s(raw: bytes) -> str:
        return "".join(b2u[b] for b in raw)

    # Merges, in rank order, as byte strings: 注 whole; 意 + the first two bytes of 力; 力's last byte alone;
    # 机's first byte alone, then the rest of 机 + all of 制; " is"; the emoji whole; 。 whole.
    zhu, yi, li, ji, zhi = ("注意力机制"[i].encode() for i in range(5))
    steps = [
        (zhu[:1], zhu[1:2]), (zhu[:2], zhu[2:]),
        (yi[:1], yi[1:2]), (yi[:2], yi[2:]), (yi, li[:1]), (yi + li[:1], li[1:2]),
        (ji[1:2], ji[2:]), (ji[1:], zhi[:1]), (ji[1:] + zhi[:1], zhi[1:2]), (ji[1:] + zhi[:2], zhi[2:]),
        (b" ", b"i"), (b" i", b"s"),
        ("👍".encode()[:1], "👍".encode()[1:2]), ("👍".encode()[:2], "👍".encode()[2:3]),
        ("👍".encode()[:3], "👍".encode()[3:]),
        ("。".encode()[:1], "。".encode()[1:2]), ("。".encode()[:2], "。".encode()[2:]),
    ]  # fmt: skip
    merges = [(s(a), s(b)) for a, b in steps]
    vocab = {"<|endoftext|>": 0}
    for ch in b2u.values():
        vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


def test_byte_level_bpe_labels_read_as_text(byte_bpe: object) -> None:
    enc = encode(byte_bpe, "注意力机制 is 👍。")
    assert "".join(enc.tokens).startswith("æ³¨æĦıåĬ")  # the raw strings stay as the tokenizer has them
    assert len(enc.tokens) == 9
    # 注 | 意 + 2 bytes of 力 | last byte of 力 | first byte of 机 | rest of 机 + 制 | " is" | " " | 👍 | 。
    assert enc.labels == ["注", "意力", "…", "机", "…制", "␣is", "␣", "👍", "。"]
    # jieba's 注意力 / 机制 however the bytes fell; " is"; the space joins 👍 (one word for the tokenizer); 。 none
    assert enc.word_ids == [0, 0, 0, 1, 1, 2, 3, 3, None]


# -- SentencePiece (Unigram, Metaspace) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unigram() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "</s>", "▁", "▁注意", "力", "机制", "是一种", "技术", "。", "At", "tention", "▁is"]
    tok = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def test_sentencepiece_unigram(unigram: object) -> None:
    enc = encode(unigram, "注意力机制是一种技术。Attention is 😀")
    assert enc.tokens == ["▁注意", "力", "机制", "是一种", "技术", "。", "At", "tention", "▁is", "▁", "<unk>"]
    # "▁注意": the ▁ was prepended by the tokenizer, there is no space in the text, so no ␣; "▁is" has one.
    assert enc.labels == ["注意", "力", "机制", "是一种", "技术", "。", "At", "tention", "␣is", "␣", "😀"]
    # 注意力 / 机制 / 是 / 一种 / 技术 from jieba, but the piece 是一种 holds 是 and 一种, so they are one word;
    # At+tention one word (the tokenizer's); ▁ joins 😀 (an unknown, yet a word).
    assert enc.word_ids == [0, 0, 1, 2, 3, None, 4, 4, 5, 6, 6]
    assert enc.unknown == [False] * 10 + [True]


def test_unknown_share_counts_text_tokens_only() -> None:
    assert tokentext.unknown_share([False, True, True, False, False], [True, False, False, False, True]) == (2, 2 / 3)
    assert tokentext.unknown_share([False, False], [True, True]) == (0, 0.0)


def test_labels_of_tokens_without_offsets_and_whitespace() -> None:
    # [CLS] keeps its string; a token covering a newline shows ↵; offsets are per segment.
    labels = tokentext.token_labels(
        ["a\nb", "c d"],
        ["[CLS]", "a", "Ċ", "b", "[SEP]", "c", "Ġd"],
        [None, [0, 1], [1, 2], [2, 3], None, [0, 1], [2, 3]],
        [0, 0, 0, 0, 0, 1, 1],
    )  # fmt: skip
    assert labels == ["[CLS]", "a", "↵", "b", "[SEP]", "c", "␣d"]


# -- properties over arbitrary text ------------------------------------------------------------------------------

_GPT2 = None


def _gpt2() -> object:
    global _GPT2
    if _GPT2 is None:
        from transformers import GPT2TokenizerFast

        from tests.tiny_models import _byte_level_bpe

        vocab, merges = _byte_level_bpe(["<|endoftext|>"])
        _GPT2 = GPT2TokenizerFast(vocab=vocab, merges=merges)
    return _GPT2


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="␣↵⇥…\r"),
    min_size=1,
    max_size=40,
).filter(lambda t: t.strip())


@settings(max_examples=80, deadline=None)
@given(_TEXT)
def test_byte_level_labels_spell_the_text_once(text: str) -> None:
    """Read in order, with the markers turned back into what they stand for, the labels are the text itself
    (whitespace other than newlines and tabs shown as ␣): nothing dropped, nothing repeated."""
    enc = encode(_gpt2(), text)
    assert len(enc.labels) == len(enc.tokens) == len(enc.word_ids)
    back = "".join(enc.labels).replace("…", "").replace("␣", " ").replace("↵", "\n").replace("⇥", "\t")
    expected = "".join(c if c in "\n\t" or not c.isspace() else " " for c in text)
    assert back == expected
    _check_words([text], enc)


def _check_words(texts: list[str], enc: Encoded) -> None:
    seen: list[int] = []
    for wid, off, sp, g in zip(enc.word_ids, enc.offsets, enc.special, enc.segments, strict=True):
        if sp or off is None:
            assert wid is None
            continue
        covered = texts[g][off[0] : off[1]]
        if covered and all(tokentext.is_punct(c) for c in covered):
            assert wid is None  # punctuation is never part of a word
        if wid is not None and wid not in seen:
            assert wid == len(seen)  # numbered by first appearance
            seen.append(wid)


@settings(max_examples=50, deadline=None)
@given(_TEXT, _TEXT)
def test_wordpiece_pairs_never_fail_and_words_stay_in_their_segment(text: str, pair: str) -> None:
    from transformers import BertTokenizerFast

    from tests.tiny_models import WORDPIECE_VOCAB

    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(WORDPIECE_VOCAB)}, do_lower_case=True)
    enc = encode(tok, text, pair)
    assert len(enc.labels) == len(enc.tokens) == len(enc.word_ids)
    _check_words([text, pair], enc)
    words_a = {w for w, g in zip(enc.word_ids, enc.segments, strict=True) if w is not None and g == 0}
    words_b = {w for w, g in zip(enc.word_ids, enc.segments, strict=True) if w is not None and g == 1}
    assert not words_a & words_b
