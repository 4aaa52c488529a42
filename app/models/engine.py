"""The engine interface: text -> ``Encoded`` -> attention. Hugging Face engines and the textbook block implement it.

Every engine exposes the same two steps so the batcher can treat them alike:
``encode`` (text -> ``Encoded``, thread-safe) and ``run`` (a batch of ``Encoded`` -> per-item
``Attention``: a dense (L, H, T, T) tensor, or a ``Captured`` state that computes the weights of the
layers and heads asked for). ``forward`` is ``run`` made dense.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from . import tokentext
from .capture import Captured

#: One item's attention: dense (L, H, T, T), or captured q/k/mask computing any layer and head on demand.
Attention = torch.Tensor | Captured


@dataclass
class Seq2SeqAttention:
    """One encoder–decoder item: the encoder's self-attention, the decoder's (causal) self-attention, and the
    decoder's cross-attention to the encoder output (target positions × source positions)."""

    encoder: Attention  # (L, H, S, S)
    decoder: Attention  # (Ld, Hd, T, T)
    cross: Attention  # (Ld, Hd, T, S)


#: What ``Engine.run`` gives per item: one self-attention, or the three of an encoder–decoder.
Output = Attention | Seq2SeqAttention


def self_attention(out: Output) -> Attention:
    """The square self-attention of an item: an encoder–decoder's encoder (over the source), else the item itself."""
    return out.encoder if isinstance(out, Seq2SeqAttention) else out


def dense(attention: Attention | Seq2SeqAttention) -> torch.Tensor:
    """Every layer and head as one (L, H, T, T) tensor (computed from a capture, as is otherwise).

    An encoder–decoder item has three; ``dense`` of it is a TypeError (use its parts)."""
    if isinstance(attention, Seq2SeqAttention):
        raise TypeError("an encoder-decoder item has three attentions: take .encoder, .decoder or .cross")
    if isinstance(attention, Captured):
        return attention.select(list(range(attention.num_layers)), list(range(attention.num_heads)))
    return attention


Kind = Literal["encoder", "decoder", "encoder-decoder", "custom"]


class TooLong(Exception):
    """The input has more tokens than the model's limit and truncation was not asked for."""

    def __init__(self, num_tokens: int, max_tokens: int) -> None:
        super().__init__(f"{num_tokens} tokens > {max_tokens}")
        self.num_tokens = num_tokens
        self.max_tokens = max_tokens


@dataclass
class Encoded:
    """One tokenized input. Lists are all of length T (tokens, special ones included)."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    tokens: list[str]
    offsets: list[list[int] | None]
    special: list[bool]
    unknown: list[bool]
    segments: list[int]
    truncated: bool
    #: What each token covers in the text, readable in any script; see ``tokentext.token_labels``.
    labels: list[str] = field(default_factory=list)
    #: Word of each token (null: special, punctuation, space); see ``tokentext.word_ids``.
    word_ids: list[int | None] = field(default_factory=list)
    #: Encoder–decoder models: the decoder's input (its start token, then the teacher-forced target text).
    target: Encoded | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(kw_only=True)
class Engine:
    """A loaded model and its tokenizer. ``forward`` is safe to call from one thread at a time per engine."""

    name: str
    kind: Kind
    description: str
    num_layers: int
    num_heads: int  # query heads
    max_tokens: int
    tokenizer: Any
    family: str  # config.model_type ("bert", "llama", ...), "textbook" for the custom block
    num_kv_heads: int  # key/value heads: fewer than num_heads under grouped-query attention
    head_dim: int
    dtype: str  # of the weights: "float32" or "bfloat16"
    num_parameters: int
    can_predict: bool  # the checkpoint has a masked-LM or causal-LM head
    source: str  # where it came from: a folder's name, a hub id (org/name@commit) or "built-in"
    supports_pair: bool = True
    #: Encoder–decoder models: the decoder's layers and heads (its self- and cross-attention); None otherwise.
    decoder_layers: int | None = None
    decoder_heads: int | None = None
    _tok_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- tokenizing -----------------------------------------------------------------------------
    def encode(self, text: str, text_pair: str | None = None, truncate: bool = False,
               readable: bool = True) -> Encoded:  # fmt: skip
        """Tokenize with offsets. Raises ``TooLong`` if over ``max_tokens`` and not ``truncate``.

        ``readable=False`` leaves ``labels`` and ``word_ids`` empty (callers that only compute, like the corpus
        mode, skip the cost of making them). A fast tokenizer is not re-entrant ("Already borrowed"), hence
        the lock.
        """
        with self._tok_lock:
            full = self._tokenize(text, text_pair, truncation=False)
            truncated = len(full["input_ids"]) > self.max_tokens
            if truncated:
                if not truncate:
                    raise TooLong(len(full["input_ids"]), self.max_tokens)
                full = self._tokenize(text, text_pair, truncation=True)
            ids: list[int] = list(full["input_ids"])
            tokens = self.tokenizer.convert_ids_to_tokens(ids)
            seq_ids = full.sequence_ids()
            tokenizer_words = full.word_ids() if getattr(full, "is_fast", False) else None
        added = [bool(s) for s in full["special_tokens_mask"]]  # inserted by the tokenizer, no source text
        offsets = [None if a else [int(x), int(y)] for (x, y), a in zip(full["offset_mapping"], added, strict=True)]
        special, unknown = self._flags(ids, added)
        segments, last = [], 0
        for sid in seq_ids:  # special tokens belong to the segment they close
            last = sid if sid is not None else last
            segments.append(last)
        texts = [text, text_pair or ""]
        tokens = [str(t) for t in tokens]
        return Encoded(
            input_ids=ids,
            token_type_ids=list(full["token_type_ids"]) if "token_type_ids" in full else None,
            tokens=tokens,
            offsets=offsets,
            special=special,
            unknown=unknown,
            segments=segments,
            truncated=truncated,
            labels=tokentext.token_labels(texts, tokens, offsets, segments) if readable else [],
            word_ids=tokentext.word_ids(texts, tokens, offsets, segments, special, tokenizer_words) if readable else [],
        )

    def encode_compute(self, texts: list[str]) -> list[Encoded | None]:
        """Single texts tokenized in one call, for callers that only compute (the corpus mode): the ids, token
        types, tokens and special flags ``encode`` gives; no offsets, labels or word ids. None for a text over
        ``max_tokens`` (its caller uses ``encode``, which truncates or raises ``TooLong``)."""
        out: list[Encoded | None] = []
        with self._tok_lock:
            batch = self.tokenizer(texts, truncation=False, return_special_tokens_mask=True,
                                   return_attention_mask=False, verbose=False)  # fmt: skip
            types = batch.get("token_type_ids")
            for i, ids in enumerate(batch["input_ids"]):
                n = len(ids)
                if n > self.max_tokens:
                    out.append(None)
                    continue
                special, unknown = self._flags(ids, [bool(a) for a in batch["special_tokens_mask"][i]])
                out.append(
                    Encoded(
                        input_ids=list(ids),
                        token_type_ids=list(types[i]) if types is not None else None,
                        tokens=[str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)],
                        offsets=[None] * n,
                        special=special,
                        unknown=unknown,
                        segments=[0] * n,
                        truncated=False,
                    )
                )
        return out

    @functools.cached_property
    def _special_ids(self) -> tuple[frozenset[int], int | None]:
        """The tokenizer's special ids except [UNK], and the [UNK] id (read once: a tokenizer property builds
        the list on every call)."""
        unk = self.tokenizer.unk_token_id
        return frozenset(self.tokenizer.all_special_ids) - {unk}, unk

    def _flags(self, ids: list[int], added: list[bool]) -> tuple[list[bool], list[bool]]:
        """(special, unknown) of each token. ``added``: inserted by the tokenizer. A "[SEP]" typed in the text
        becomes the real separator, so it is special too; [UNK] is text, never special."""
        special_ids, unk = self._special_ids
        special = [a or i in special_ids for a, i in zip(added, ids, strict=True)]
        return special, [unk is not None and i == unk for i in ids]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Each text's token count as ``encode`` would give it untruncated (special tokens included), tokenized
        as one batch: no offsets, labels or word ids."""
        with self._tok_lock:
            ids = self.tokenizer(texts, truncation=False, verbose=False, return_attention_mask=False,
                                 return_token_type_ids=False)["input_ids"]  # fmt: skip
        return [len(i) for i in ids]

    def _tokenize(self, text: str, text_pair: str | None, truncation: bool) -> Any:
        return self.tokenizer(
            text,
            text_pair,
            truncation="longest_first" if truncation else False,
            max_length=self.max_tokens if truncation else None,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=None,
            verbose=False,  # counting an over-long input first is intended, not worth a warning
        )

    # -- running --------------------------------------------------------------------------------
    def forward(self, batch: list[Encoded]) -> list[torch.Tensor]:
        """Run a padded batch; return each item's dense attention, padding cut away: list of (L, H, T_i, T_i).

        An encoder–decoder gives its encoder's self-attention here (``run`` gives all three)."""
        return [dense(self_attention(item)) for item in self.run(batch)]

    def encode_target(self, target: str | None, truncate: bool = False) -> Encoded:
        """An encoder–decoder's decoder input: its start token, then ``target`` tokenized as a target (teacher
        forcing; the decoder attention of every target token is exact, as causal attention never looks ahead).

        Without ``target``: the start token alone (the decoder's first step). Raises ``TooLong`` past ``max_tokens``.
        """
        raise NotImplementedError(f"{self.name} is not an encoder-decoder model")

    def pad(self, batch: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``(ids, mask, types)``, each (B, T_max); mask 1 = real token."""
        lengths = [len(e) for e in batch]
        t_max = max(lengths)
        pad_id = self.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else pad_id
        ids = torch.full((len(batch), t_max), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)  # (B, T) 1 = real token
        types = torch.zeros((len(batch), t_max), dtype=torch.long)  # (B, T)
        for i, enc in enumerate(batch):
            n = len(enc)
            ids[i, :n] = torch.tensor(enc.input_ids)
            mask[i, :n] = 1
            if enc.token_type_ids is not None:
                types[i, :n] = torch.tensor(enc.token_type_ids)
        return ids, mask, types

    def run(self, batch: list[Encoded]) -> list[Output]:
        """Run a padded batch; return each item's attention, padding cut away (dense here: (L, H, T_i, T_i))."""
        if not batch:
            return []
        lengths = [len(e) for e in batch]
        t_max = max(lengths)
        ids, mask, types = self.pad(batch)  # each (B, T)
        with torch.inference_mode():
            attn = self._attention(ids, mask, types)  # (L, B, H, T, T)
        if attn.dtype != torch.float32:  # a bfloat16 model: the weights leave every engine as float32
            attn = attn.float()
        if attn.shape[:3] != (self.num_layers, len(batch), self.num_heads) or attn.shape[3:] != (t_max, t_max):
            raise RuntimeError(
                f"{self.name}: attention has shape {tuple(attn.shape)}, expected "
                f"({self.num_layers}, {len(batch)}, {self.num_heads}, {t_max}, {t_max})"
            )
        # Right padding leaves real positions untouched; cut each item back to its own length.
        return [attn[:, i, :, :n, :n] for i, n in enumerate(lengths)]  # each (L, H, T_i, T_i)

    def padded(self, batch: list[Encoded]) -> torch.Tensor:
        """The whole right-padded batch's attention, padding included: (L, B, H, T_max, T_max), float32.
        (An encoder–decoder's encoder self-attention.)

        For callers that reduce over the batch themselves (corpus statistics); padded keys get weight 0,
        padded query rows hold whatever the model computes there and must be masked out by the caller."""
        ids, mask, types = self.pad(batch)  # each (B, T)
        with torch.inference_mode():
            attn = self._attention(ids, mask, types)  # (L, B, H, T, T)
        return attn.float()

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
