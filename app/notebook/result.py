"""``AttentionMap``: one input's attention as NumPy arrays, with head statistics and aggregates.

Built from a Hugging Face engine (the same ``Engine.forward`` the REST API runs, so the same numbers),
from a plain torch module's ``nn.MultiheadAttention`` layers, or from attention tensors a caller already
has (bertviz's ``head_view(attention, tokens)`` inputs). Imports no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..attention import stats as analysis
from ..models.engine import Encoded, Engine, TooLong

#: Token strings treated as special when attention comes without a tokenizer (bertviz-style input).
KNOWN_SPECIAL = frozenset(
    {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>", "<cls>", "<sep>", "<|endoftext|>"}
)
CLS_MARKERS = ("[CLS]", "<s>", "<cls>")
SEP_MARKERS = ("[SEP]", "</s>", "<sep>")
AGGREGATES = ("mean", "max", "rollout")


def indices(asked: list[int] | None, count: int, what: str) -> list[int]:
    """The API's layer/head selection rules (all when None; no empty list; in range; repeats dropped)."""
    if asked is None:
        return list(range(count))
    if not asked:
        raise ValueError(f"`{what}s` must not be empty; omit it or pass None for all.")
    bad = [i for i in asked if not 0 <= i < count]
    if bad:
        raise ValueError(f"{what} {bad[0]} is out of range; this model has {what}s 0..{count - 1}.")
    return list(dict.fromkeys(asked))


@dataclass(eq=False)
class AttentionMap:
    """Attention of one input. ``attention[l, h, q, k]``: how much query token q attends to key token k in
    head ``heads[h]`` of layer ``layers[l]``; each query row sums to 1.

    ``full`` keeps every layer of the selected heads, which rollout needs (it multiplies layers 0..l).
    """

    model: str
    kind: str
    tokens: list[str]
    labels: list[str]  # readable text of each token: its slice of the input, or the token for special ones
    word_ids: list[int | None] | None  # the tokenizer's word index per token; None without a tokenizer
    offsets: list[list[int] | None]
    special: list[bool]
    unknown: list[bool]
    segments: list[int]
    layers: list[int]
    heads: list[int]
    truncated: bool
    cls_positions: list[int]
    sep_positions: list[int]
    full: torch.Tensor = field(repr=False)  # (L_all, len(heads), T, T) float32
    text: str | None = None
    text_pair: str | None = None
    description: str = ""

    # -- arrays ---------------------------------------------------------------------------------
    @cached_property
    def _selected(self) -> torch.Tensor:
        return self.full[self.layers] if self.layers != list(range(self.full.shape[0])) else self.full  # (l, h, T, T)

    @property
    def attention(self) -> np.ndarray:
        """(layers, heads, T, T) float32 NumPy array (read-only view of the weights)."""
        array = self._selected.numpy()
        array.flags.writeable = False
        return array

    @cached_property
    def _stats(self) -> analysis.HeadStats:
        return analysis.head_stats(self._selected, self.cls_positions, self.sep_positions)

    @property
    def stats(self) -> dict[str, np.ndarray | None]:
        """Per-head statistics, each a (layers, heads) float32 array (None where undefined, e.g. no [CLS])."""
        return {name: None if value is None else value.numpy() for name, value in vars(self._stats).items()}

    @cached_property
    def _aggregates(self) -> dict[str, torch.Tensor]:
        return {
            "mean": analysis.mean_over_heads(self.full)[self.layers],  # (l, T, T)
            "max": analysis.max_over_heads(self.full)[self.layers],  # (l, T, T)
            "rollout": analysis.rollout(self.full)[self.layers],  # (l, T, T), product over layers 0..l
        }

    @property
    def aggregates(self) -> dict[str, np.ndarray]:
        """``mean`` and ``max`` over heads and attention ``rollout``, each (layers, T, T) float32."""
        return {name: value.numpy() for name, value in self._aggregates.items()}

    @property
    def shape(self) -> tuple[int, int, int, int]:
        layers, heads, t, _ = self._selected.shape
        return int(layers), int(heads), int(t), int(t)

    def __repr__(self) -> str:
        layers, heads, t, _ = self.shape
        return f"<AttentionMap {self.model}: {layers} layers x {heads} heads x {t} tokens>"

    # -- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The REST API's ``AttentionResponse`` fields (full-precision NumPy arrays) plus labels, word ids,
        statistics and aggregates."""
        return {
            "model": self.model,
            "kind": self.kind,
            "tokens": self.tokens,
            "labels": self.labels,
            "word_ids": self.word_ids,
            "offsets": self.offsets,
            "special": self.special,
            "unknown": self.unknown,
            "segments": self.segments,
            "layers": self.layers,
            "heads": self.heads,
            "attention": self.attention,
            "truncated": self.truncated,
            "cls_positions": self.cls_positions,
            "sep_positions": self.sep_positions,
            "stats": self.stats,
            "aggregates": self.aggregates,
        }

    def to_json(self) -> str:
        """JSON written exactly as the REST API writes it: weights, statistics and aggregates with 4 decimals."""
        from ..serving.encoding import Weights, dumps, round_for_json

        body = {k: v for k, v in self.to_dict().items() if k not in {"attention", "stats", "aggregates"}}
        body["stats"] = {name: None if v is None else round_for_json(v) for name, v in vars(self._stats).items()}
        body["aggregates"] = {name: round_for_json(v) for name, v in self._aggregates.items()}
        body["attention"] = Weights(self._selected)
        return bytes(dumps(body)).decode("utf-8")

    def _repr_html_(self) -> str:
        from .html import render_view

        return render_view(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live HTML, plus the static grid as ``image/png`` for viewers that show no HTML output."""
        from .html import View

        return View(self)._repr_mimebundle_(include, exclude)


# -- builders ---------------------------------------------------------------------------------------


def _labels(enc: Encoded, text: str, text_pair: str | None) -> list[str]:
    out = []
    for tok, off, seg, special in zip(enc.tokens, enc.offsets, enc.segments, enc.special, strict=True):
        source = text_pair if seg == 1 and text_pair is not None else text
        out.append(source[off[0] : off[1]] if off is not None and not special and off[1] > off[0] else tok)
    return out


def from_engine(
    engine: Engine,
    text: str,
    text_pair: str | None = None,
    *,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    truncate: bool = False,
) -> AttentionMap:
    """Tokenize and run ``text`` (and ``text_pair``) through ``engine``, as the REST API does.

    An encoder–decoder model (T5, BART, Marian) gives its encoder's self-attention over ``text``; the decoder and
    cross-attention are the REST API's (``target``)."""
    for name, value in (("text", text), ("text_pair", text_pair)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"`{name}` must be a non-empty string")
    if text_pair is not None and not engine.supports_pair:
        raise ValueError(f"model {engine.name!r} does not take a text_pair")
    layer_ids = indices(layers, engine.num_layers, "layer")
    head_ids = indices(heads, engine.num_heads, "head")
    try:
        enc = engine.encode(text, text_pair, truncate)
    except TooLong as exc:
        raise ValueError(
            f"the input has {exc.num_tokens} tokens; {engine.name} takes at most {exc.max_tokens}. "
            "Shorten it or pass truncate=True."
        ) from None
    attn = engine.forward([enc])[0]  # (L, H, T, T)
    if not bool(torch.isfinite(attn).all()):
        raise ValueError("the model produced NaN or infinite attention weights for this input")
    full = attn if head_ids == list(range(engine.num_heads)) else attn[:, head_ids]  # (L, h, T, T)
    names = engine.tokenizer.special_tokens_map
    word_ids: list[int | None] | None = None
    with engine._tok_lock:  # the Encoded has no word ids; one more tokenizer call (cheap) gives them
        again = engine._tokenize(text, text_pair, truncation=enc.truncated)
    if hasattr(again, "word_ids"):
        word_ids = list(again.word_ids())
    return AttentionMap(
        model=engine.name,
        kind=engine.kind,
        tokens=enc.tokens,
        labels=_labels(enc, text, text_pair),
        word_ids=word_ids,
        offsets=enc.offsets,
        special=enc.special,
        unknown=enc.unknown,
        segments=enc.segments,
        layers=layer_ids,
        heads=head_ids,
        truncated=enc.truncated,
        cls_positions=analysis.special_positions(enc.tokens, enc.special, names.get("cls_token")),
        sep_positions=analysis.special_positions(enc.tokens, enc.special, names.get("sep_token")),
        full=attn_contiguous(full),
        text=text,
        text_pair=text_pair,
        description=engine.description + (": encoder self-attention" if engine.kind == "encoder-decoder" else ""),
    )


def attn_contiguous(attn: torch.Tensor) -> torch.Tensor:
    return attn.detach().to(torch.float32).contiguous()


def stack_attention(attention: Any, batch_index: int = 0) -> torch.Tensor:
    """bertviz-style attention -> (L, H, T, T) float32.

    Accepts what ``model(..., output_attentions=True).attentions`` is (a tuple of L tensors of shape
    (B, H, T, T)), a list of (H, T, T), or one array/tensor of shape (L, B, H, T, T) or (L, H, T, T).
    """
    if isinstance(attention, torch.Tensor | np.ndarray | list | tuple):
        layers = list(attention)
    else:
        raise TypeError(f"attention must be a tuple/list of tensors or an array, not {type(attention).__name__}")
    if not layers:
        raise ValueError("attention has no layers")
    out = []
    for i, layer in enumerate(layers):
        t = torch.as_tensor(np.asarray(layer) if not isinstance(layer, torch.Tensor) else layer.detach().cpu())
        if t.dim() == 4:  # (B, H, T, T)
            if not 0 <= batch_index < t.shape[0]:
                raise ValueError(f"batch_index {batch_index} is out of range for a batch of {t.shape[0]}")
            t = t[batch_index]
        if t.dim() != 3 or t.shape[-1] != t.shape[-2]:
            raise ValueError(f"layer {i}: expected (batch, heads, T, T) or (heads, T, T), got {tuple(t.shape)}")
        out.append(t.to(torch.float32))
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) != 1:
        raise ValueError(f"layers have different shapes: {sorted(shapes)}")
    stacked = torch.stack(out)  # (L, H, T, T)
    if not bool(torch.isfinite(stacked).all()):
        raise ValueError("attention contains NaN or infinite values")
    if bool((stacked < -1e-6).any()) or bool((stacked > 1 + 1e-6).any()):
        raise ValueError("attention weights must lie in [0, 1] (softmax output), not scores or logits")
    return stacked.contiguous()


def from_tensors(
    attention: Any,
    tokens: list[str],
    *,
    sentence_b_start: int | None = None,
    special: list[bool] | None = None,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    batch_index: int = 0,
    model: str = "attention",
    kind: str = "encoder",
    description: str = "",
) -> AttentionMap:
    """An ``AttentionMap`` of attention tensors and their token strings (bertviz's ``head_view`` inputs)."""
    full = stack_attention(attention, batch_index)  # (L, H, T, T)
    tokens = [str(t) for t in tokens]
    t = full.shape[-1]
    if len(tokens) != t:
        raise ValueError(f"{len(tokens)} tokens for attention over {t} positions")
    if special is None:
        special = [tok in KNOWN_SPECIAL for tok in tokens]
    elif len(special) != t:
        raise ValueError(f"{len(special)} special flags for {t} tokens")
    if sentence_b_start is not None and not 0 < sentence_b_start < t:
        raise ValueError(f"sentence_b_start {sentence_b_start} must be between 1 and {t - 1}")
    segments = [0 if sentence_b_start is None or i < sentence_b_start else 1 for i in range(t)]
    layer_ids = indices(layers, full.shape[0], "layer")
    head_ids = indices(heads, full.shape[1], "head")
    if head_ids != list(range(full.shape[1])):
        full = full[:, head_ids].contiguous()  # (L, h, T, T)

    def positions(markers: tuple[str, ...]) -> list[int]:
        return [i for i, (tok, sp) in enumerate(zip(tokens, special, strict=True)) if sp and tok in markers]

    return AttentionMap(
        model=model,
        kind=kind,
        tokens=tokens,
        labels=list(tokens),
        word_ids=None,
        offsets=[None] * t,
        special=[bool(s) for s in special],
        unknown=[False] * t,
        segments=segments,
        layers=layer_ids,
        heads=head_ids,
        truncated=False,
        cls_positions=positions(CLS_MARKERS),
        sep_positions=positions(SEP_MARKERS),
        full=full,
        description=description,
    )
