"""Models that turn text into attention weights: Hugging Face encoders/decoders and the custom block.

Every engine exposes the same two steps so the batcher can treat them alike:
``encode`` (text -> ``Encoded``, thread-safe) and ``forward`` (a batch of ``Encoded`` -> per-item
attention tensors of shape (L, H, T, T)).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from app.custom_block import SelfAttention

Kind = Literal["encoder", "decoder", "custom"]


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

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Engine:
    """A loaded model and its tokenizer. ``forward`` is safe to call from one thread at a time per engine."""

    name: str
    kind: Kind
    description: str
    num_layers: int
    num_heads: int
    max_tokens: int
    tokenizer: Any
    supports_pair: bool = True
    _tok_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- tokenizing -----------------------------------------------------------------------------
    def encode(self, text: str, text_pair: str | None = None, truncate: bool = False) -> Encoded:
        """Tokenize with offsets. Raises ``TooLong`` if over ``max_tokens`` and not ``truncate``.

        A fast tokenizer is not re-entrant ("Already borrowed"), hence the lock.
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
        added = [bool(s) for s in full["special_tokens_mask"]]  # inserted by the tokenizer, no source text
        offsets = [None if a else [int(x), int(y)] for (x, y), a in zip(full["offset_mapping"], added, strict=True)]
        # A "[SEP]" typed in the text becomes the real separator: flag it too, but keep its offsets.
        special_ids = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}  # [UNK] is text
        special = [a or i in special_ids for a, i in zip(added, ids, strict=True)]
        segments, last = [], 0
        for sid in seq_ids:  # special tokens belong to the segment they close
            last = sid if sid is not None else last
            segments.append(last)
        unk = self.tokenizer.unk_token_id
        return Encoded(
            input_ids=ids,
            token_type_ids=list(full["token_type_ids"]) if "token_type_ids" in full else None,
            tokens=[str(t) for t in tokens],
            offsets=offsets,
            special=special,
            unknown=[unk is not None and i == unk for i in ids],
            segments=segments,
            truncated=truncated,
        )

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
        """Run a padded batch; return each item's attention, padding cut away: list of (L, H, T_i, T_i)."""
        if not batch:
            return []
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
        with torch.inference_mode():
            attn = self._attention(ids, mask, types)  # (L, B, H, T, T)
        if attn.shape[:3] != (self.num_layers, len(batch), self.num_heads) or attn.shape[3:] != (t_max, t_max):
            raise RuntimeError(
                f"{self.name}: attention has shape {tuple(attn.shape)}, expected "
                f"({self.num_layers}, {len(batch)}, {self.num_heads}, {t_max}, {t_max})"
            )
        # Right padding leaves real positions untouched; cut each item back to its own length.
        return [attn[:, i, :, :n, :n] for i, n in enumerate(lengths)]  # each (L, H, T_i, T_i)

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class HFEngine(Engine):
    """A Hugging Face ``AutoModel`` run with eager attention (SDPA returns no weights)."""

    model: Any = None
    uses_token_types: bool = False

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types:
            kwargs["token_type_ids"] = types
        layers: list[torch.Tensor | None] = list(self.model(**kwargs, output_attentions=True).attentions)
        # Stack layer by layer, letting go of each source as it is copied: torch.stack would hold the
        # model's L tensors and the stacked copy at once (150 MB instead of 88 MB at 512 tokens).
        first = layers[0]
        assert first is not None
        stacked = torch.empty((len(layers), *first.shape), dtype=first.dtype)  # (L, B, H, T, T)
        for i, layer in enumerate(layers):  # layers: L x (B, H, T, T)
            assert layer is not None
            stacked[i].copy_(layer)
            layers[i] = layer = None
        return stacked


@dataclass
class CustomEngine(Engine):
    """minilm's embeddings feeding the textbook ``SelfAttention`` block (one layer)."""

    embeddings: nn.Module | None = None
    block: SelfAttention | None = None

    def embed(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E): token + position + segment embeddings, LayerNorm (as BERT's layer 0 sees)."""
        assert self.embeddings is not None
        x: torch.Tensor = self.embeddings(input_ids=ids, token_type_ids=types)
        return x

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        assert self.block is not None
        x = self.embed(ids, types)  # (B, T, E)
        weights: torch.Tensor
        _, weights = self.block(x, key_padding_mask=mask == 0)  # (B, nh, T, T)
        return weights.unsqueeze(0)  # (1, B, nh, T, T)


# ---------------------------------------------------------------------------------------------
# Loading


def _is_decoder(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_decoder", False):
        return True
    mt = config.model_type
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _model_max_tokens(config: Any, tokenizer: Any) -> int:
    limits = []
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style position ids start after the padding index.
            offset = (config.pad_token_id + 1) if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
            limits.append(value - offset)
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    return min(limits) if limits else 512


def load_hf(name: str, path: Path, description: str | None = None) -> HFEngine:
    """Load a local Hugging Face model folder (no network) as an attention engine."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a progress bar is noise in a server log
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    config = model.config
    kind: Kind = "decoder" if _is_decoder(config) else "encoder"
    layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    return HFEngine(
        name=name,
        kind=kind,
        description=description or f"{config.model_type} {kind} from {path.name}: {layers} layers x {heads} heads",
        num_layers=layers,
        num_heads=heads,
        max_tokens=_model_max_tokens(config, tokenizer),
        tokenizer=tokenizer,
        model=model,
        uses_token_types="token_type_ids" in tokenizer.model_input_names,
    )


def make_custom(
    name: str,
    base: HFEngine,
    init: Literal["minilm", "random", "checkpoint"],
    seed: int = 0,
    checkpoint: Path | None = None,
) -> CustomEngine:
    """Build the custom block over ``base``'s tokenizer and embedding layer (a BERT model)."""
    from app.custom_block import init_from_bert_layer, init_random, load_checkpoint

    config = base.model.config
    block = SelfAttention(int(config.hidden_size), int(config.num_attention_heads)).eval()
    if init == "minilm":
        init_from_bert_layer(block, base.model.encoder.layer[0].attention)
        how = f"Q/K/V/out copied from {base.name} layer 0, so its heads equal {base.name}'s layer-0 heads"
    elif init == "random":
        init_random(block, seed)
        how = f"random weights, seed {seed}"
    else:
        if checkpoint is None:
            raise ValueError("custom_init=checkpoint needs HEADMAP_CUSTOM_CHECKPOINT")
        load_checkpoint(block, checkpoint)
        how = f"weights from {checkpoint.name}"
    return CustomEngine(
        name=name,
        kind="custom",
        description=(
            f"Textbook block: MultiheadAttention({block.embed_size}, {block.num_heads}) -> residual -> LayerNorm "
            f"-> Linear, on {base.name}'s embeddings; {how}"
        ),
        num_layers=1,
        num_heads=block.num_heads,
        max_tokens=base.max_tokens,
        tokenizer=base.tokenizer,
        _tok_lock=base._tok_lock,  # one tokenizer object, so one lock
        embeddings=base.model.embeddings,
        block=block,
    )
