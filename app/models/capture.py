"""Attention captured without materialising it.

A capture function registered with transformers' ``AttentionInterface`` (and the matching entry of
``AttentionMaskInterface``) runs each layer's normal SDPA path and keeps what the layer was given: its
post-RoPE queries and keys, its mask, its scaling and, where the model has one, its logit soft-cap.
The weights of any (layer, head) are then ``softmax(softcap(q·kᵀ·scaling) + mask)``, computed when asked,
for any range of queries × keys, so a request holds O(layers × tokens × head size), not
O(layers × heads × tokens²). With grouped-query attention, query head ``h`` pairs with key/value head
``h // (Hq / Hkv)``, as transformers' ``repeat_kv`` does.

Masks stay descriptions where transformers built them through the mask interface (a mask function plus
the padding row, evaluated per tile); a mask a model made itself is kept as given. Sliding windows and
padding arrive through the mask; a causal layer that SDPA ran with ``is_causal`` (no mask) is causal.

A caller that wants every layer's dense weights of a batch anyway (the corpus) uses ``dense_forward``: the
weights are then computed once, in the forward pass, and the layer's output is made from them.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch

#: The name under which the capture is registered in both interfaces (``config._attn_implementation``).
CAPTURE = "headmap_capture"

#: Keys per chunk when a row's normaliser is computed for a tile narrower than all keys.
_KEY_CHUNK = 1024


# -- masks --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mask:
    """Which keys each query of one item may see, evaluated per tile.

    ``kind``: ``"full"`` (every key), ``"causal"`` (keys ≤ query), ``"function"`` (a transformers mask
    function of ``(batch, head, q, kv)`` indices, padding already folded in, evaluated at ``batch``), or
    ``"dense"`` (a tensor the model built itself: bool, or float to add to the scores).
    """

    kind: str
    function: Callable[..., torch.Tensor] | None = None
    batch: int = 0
    q_offset: int = 0
    kv_offset: int = 0
    dense: torch.Tensor | None = None  # [Hm, Tq, Tk] with Hm 1 or heads

    def tile(self, q0: int, q1: int, k0: int, k1: int, heads: torch.Tensor | None = None) -> torch.Tensor | None:
        """Mask of queries ``q0:q1`` × keys ``k0:k1``: None (no masking), bool [1|h, q, k] or float [1|h, q, k]."""
        if self.kind == "full":
            return None
        if self.kind == "causal":
            if k1 - 1 <= q0:  # every key of the tile precedes every query
                return None
            qi = torch.arange(q0, q1)[:, None]  # [q, 1]
            ki = torch.arange(k0, k1)[None, :]  # [1, k]
            return (ki <= qi).unsqueeze(0)  # [1, q, k]
        if self.kind == "function":
            assert self.function is not None
            b = torch.tensor([self.batch])[:, None, None, None]  # [1, 1, 1, 1]
            h = torch.zeros(1, dtype=torch.long)[None, :, None, None]  # [1, 1, 1, 1]
            qi = (torch.arange(q0, q1) + self.q_offset)[None, None, :, None]  # [1, 1, q, 1]
            ki = (torch.arange(k0, k1) + self.kv_offset)[None, None, None, :]  # [1, 1, 1, k]
            return self.function(b, h, qi, ki).expand(1, 1, q1 - q0, k1 - k0)[0]  # [1, q, k]
        assert self.dense is not None
        m = self.dense[:, q0:q1, k0:k1]  # [Hm, q, k]
        if heads is not None and m.shape[0] > 1:
            m = m[heads]  # [h, q, k]
        return m

    @property
    def nbytes(self) -> int:
        return 0 if self.dense is None else _storage_bytes(self.dense)


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """In place: masked-out scores become -inf (bool mask) or the float mask is added. scores [h, q, k]."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill_(~mask, -math.inf)
    return scores.add_(mask.to(scores.dtype))


def _storage_bytes(t: torch.Tensor) -> int:
    return int(t.untyped_storage().nbytes())


# -- one item's captured state ------------------------------------------------------------------------


@dataclass
class LayerCapture:
    """What one attention layer was given for one item."""

    q: torch.Tensor  # [Hq, Tq, d] post-RoPE queries
    k: torch.Tensor  # [Hkv, Tk, d] post-RoPE keys
    mask: Mask
    scaling: float
    softcap: float | None = None
    sliding_window: int | None = None
    bias: torch.Tensor | None = None  # [1|Hq, Tq, Tk] additive position bias (T5-style), if the layer had one

    @property
    def num_heads(self) -> int:
        return int(self.q.shape[0])

    @property
    def num_kv_heads(self) -> int:
        return int(self.k.shape[0])

    @property
    def nbytes(self) -> int:
        extra = 0 if self.bias is None else _storage_bytes(self.bias)
        return _storage_bytes(self.q) + _storage_bytes(self.k) + self.mask.nbytes + extra

    def scores(self, heads: torch.Tensor | None, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
        """Masked logits of ``heads`` (None: all) for queries ``q0:q1`` × keys ``k0:k1``: [h, q, k] float32."""
        group = self.num_heads // self.num_kv_heads
        if heads is None and group == 1:  # every head: slices are views, no gathered copies of q and k
            q, k = self.q[:, q0:q1].float() * self.scaling, self.k[:, k0:k1].float()  # [H, q, d], [H, k, d]
        else:
            heads = torch.arange(self.num_heads) if heads is None else heads
            q = self.q[heads, q0:q1].float() * self.scaling  # [h, q, d] scaled here: a q×d pass, not a q×k one
            k = self.k[heads // group, k0:k1].float()  # [h, k, d] each query head's key/value head
        s = torch.matmul(q, k.transpose(1, 2))  # [h, q, k]
        if self.softcap is not None:  # Gemma 2: tanh soft-capping before the mask, as its eager path does
            s = s.div_(self.softcap).tanh_().mul_(self.softcap)
        if self.bias is not None:
            b = self.bias[:, q0:q1, k0:k1]  # [1|Hq, q, k]
            s = s.add_(b[heads] if heads is not None and b.shape[0] > 1 else b)
        return _apply_mask(s, self.mask.tile(q0, q1, k0, k1, heads))


@dataclass
class Captured:
    """One item's attention as captured: per layer q [Hq, T, d], k [Hkv, T, d], mask, scaling, soft-cap.

    ``weights`` computes any (layer, heads, query range, key range) on demand without computing more
    than the asked queries × all keys; ``select`` gives the dense [layers, heads, T, T] the API encodes.
    """

    layers: list[LayerCapture]
    _head_index: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return self.layers[0].num_heads

    @property
    def num_kv_heads(self) -> int:
        return self.layers[0].num_kv_heads

    @property
    def num_tokens(self) -> int:
        return int(self.layers[0].q.shape[1])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape the dense attention would have: (L, H, T, T)."""
        t = self.num_tokens
        return (self.num_layers, self.num_heads, t, int(self.layers[0].k.shape[1]) if self.layers else t)

    @property
    def nbytes(self) -> int:
        """Bytes held (each storage counted once)."""
        seen: set[int] = set()
        total = 0
        for lc in self.layers:
            for t in (lc.q, lc.k, lc.mask.dense, lc.bias):
                if t is not None and (ptr := t.untyped_storage().data_ptr()) not in seen:
                    seen.add(ptr)
                    total += _storage_bytes(t)
        return total

    def weights(
        self,
        layer: int,
        heads: list[int] | None = None,
        q_range: tuple[int, int] | None = None,
        k_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Attention weights of ``layer`` for ``heads`` (all if None): [h, q, k] float32.

        Rows are normalised over all keys even when ``k_range`` is a part of them; then the row
        normaliser is accumulated over key chunks, so no more than queries × chunk is held at once.
        """
        lc = self.layers[layer]
        idx = None if heads is None else torch.tensor(heads, dtype=torch.long)
        q0, q1 = q_range if q_range is not None else (0, int(lc.q.shape[1]))
        tk = int(lc.k.shape[1])
        k0, k1 = k_range if k_range is not None else (0, tk)
        if (k0, k1) == (0, tk):
            return torch.softmax(lc.scores(idx, q0, q1, 0, tk), dim=-1)  # [h, q, T]
        h = lc.num_heads if idx is None else len(idx)
        lse = torch.full((h, q1 - q0, 1), -math.inf)  # [h, q, 1] log of each row's normaliser
        for c0 in range(0, tk, _KEY_CHUNK):
            s = lc.scores(idx, q0, q1, c0, min(c0 + _KEY_CHUNK, tk))  # [h, q, chunk]
            lse = torch.logaddexp(lse, torch.logsumexp(s, dim=-1, keepdim=True))
        return torch.exp(lc.scores(idx, q0, q1, k0, k1).sub_(lse))  # [h, q, k]

    def select(self, layers: list[int], heads: list[int]) -> torch.Tensor:
        """Dense weights of ``layers`` × ``heads``: [len(layers), len(heads), T, T] float32; computes only those."""
        t_q, t_k = self.shape[2], self.shape[3]
        out = torch.empty((len(layers), len(heads), t_q, t_k), dtype=torch.float32)  # [l, h, T, T]
        all_heads = heads == list(range(self.num_heads))
        for i, layer in enumerate(layers):
            out[i] = self.weights(layer, None if all_heads else heads)  # [h, T, T]
        return out


# -- recording during a forward pass ------------------------------------------------------------------


@dataclass
class _Raw:
    """One attention call of a batched forward, as given (batch dimension first)."""

    module: Any
    q: torch.Tensor  # [B, Hq, Tq, d]
    k: torch.Tensor  # [B, Hkv, Tk, d]
    mask: torch.Tensor | None  # [B, 1|H, Tq, Tk] bool or float, or None
    causal: bool  # meaningful when mask is None: SDPA ran with is_causal
    scaling: float
    softcap: float | None
    sliding_window: int | None
    bias: torch.Tensor | None  # [B|1, H, Tq, Tk]


@dataclass
class _MaskMade:
    """A mask built through the mask interface: the tensor handed to the model and how it was made."""

    tensor: torch.Tensor
    function: Callable[..., torch.Tensor]
    q_offset: int
    kv_offset: int


class StopForward(Exception):
    """Raised by the capture once a recording has the attention calls it was asked for (``recording(stop_after=)``):
    what comes after the last layer's queries and keys (its attention output, feed-forward block, pooler) is
    not needed for attention weights, so it is not run."""


@dataclass
class Recorder:
    """Collects the attention calls of one forward pass (see ``recording``)."""

    calls: list[_Raw] = field(default_factory=list)
    masks: dict[int, _MaskMade] = field(default_factory=dict)  # id(mask tensor) -> how it was made
    stop_after: int | None = None  # raise StopForward once this many calls are recorded
    # ``dense_forward``: every call's weights, computed in the forward pass itself [stop_after, B, Hq, Tq, Tk]
    keep_dense: bool = False
    kept: torch.Tensor | None = None

    def keep(self, index: int) -> torch.Tensor:
        """``dense`` of call ``index`` into its slot of ``kept`` (allocated at the first call): [B, Hq, Tq, Tk]."""
        raw = self.calls[index]
        if self.kept is None:
            assert self.stop_after is not None
            b, hq, tq, tk = raw.q.shape[0], raw.q.shape[1], raw.q.shape[2], raw.k.shape[2]
            self.kept = torch.empty((self.stop_after, b, hq, tq, tk), dtype=torch.float32)  # [calls, B, Hq, Tq, Tk]
        return self.dense(index, out=self.kept[index])

    def dense(self, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Weights of attention call ``index`` for the whole batch as it ran, padding included: [B, Hq, Tq, Tk]
        (``dense_weights``)."""
        return dense_weights(self.calls[index], out)

    def split(self, lengths: list[int]) -> list[Captured]:
        """Per item (right-padded to the batch's longest), the capture cut to its own ``lengths[i]`` tokens."""
        return split_calls(self.calls, self.masks, lengths, lengths)

    def split_seq2seq(
        self, encoder_calls: int, source_lengths: list[int], target_lengths: list[int]
    ) -> list[tuple[Captured, Captured, Captured]]:
        """An encoder–decoder forward pass, per item: (encoder self, decoder self, cross) attention.

        The encoder runs first (``encoder_calls`` calls), then each decoder layer calls its self-attention and
        then its cross-attention (queries: target positions, keys: the encoder's output, so source positions).
        """
        enc, dec = self.calls[:encoder_calls], self.calls[encoder_calls:]
        if len(dec) % 2:
            raise RuntimeError(f"captured {len(dec)} decoder attention calls, expected self and cross per layer")
        encoder = split_calls(enc, self.masks, source_lengths, source_lengths)
        decoder = split_calls(dec[0::2], self.masks, target_lengths, target_lengths)
        cross = split_calls(dec[1::2], self.masks, target_lengths, source_lengths)
        return list(zip(encoder, decoder, cross, strict=True))


def split_calls(calls: list[_Raw], masks: dict[int, _MaskMade], q_lengths: list[int],
                k_lengths: list[int]) -> list[Captured]:  # fmt: skip
    """Per item, ``calls`` cut to its own ``q_lengths[i]`` queries × ``k_lengths[i]`` keys (right padding)."""
    items: list[list[LayerCapture]] = [[] for _ in q_lengths]
    for raw in calls:
        made = masks.get(id(raw.mask)) if raw.mask is not None else None
        for i, (nq, nk) in enumerate(zip(q_lengths, k_lengths, strict=True)):
            items[i].append(
                LayerCapture(
                    q=_own(raw.q[i, :, :nq]),  # [Hq, nq, d]
                    k=_own(raw.k[i, :, :nk]),  # [Hkv, nk, d]
                    mask=_item_mask(raw, made, i, nq, nk),
                    scaling=raw.scaling,
                    softcap=raw.softcap,
                    sliding_window=raw.sliding_window,
                    bias=_item_bias(raw.bias, i, nq, nk),
                )
            )
    return [Captured(layers) for layers in items]


def _own(t: torch.Tensor) -> torch.Tensor:
    """A tensor that holds only its own elements (no view into the whole batch or a fused q/k/v), contiguous."""
    if t.is_contiguous() and _storage_bytes(t) == t.nbytes:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _item_bias(bias: torch.Tensor | None, i: int, nq: int, nk: int) -> torch.Tensor | None:
    if bias is None:
        return None
    return _own(bias[i if bias.shape[0] > 1 else 0, :, :nq, :nk])  # [1|Hq, nq, nk]


def _item_mask(raw: _Raw, made: _MaskMade | None, i: int, nq: int, nk: int) -> Mask:
    if raw.mask is None:
        return Mask("causal" if raw.causal else "full")
    if made is not None:
        return Mask("function", function=made.function, batch=i, q_offset=made.q_offset, kv_offset=made.kv_offset)
    m = raw.mask[i if raw.mask.shape[0] > 1 else 0, :, :nq, :nk]  # [Hm, nq, nk]
    return Mask("dense", dense=_own(m))


def dense_weights(raw: _Raw, out: torch.Tensor | None = None) -> torch.Tensor:
    """Weights of one attention call for the whole batch as it ran, padding included: [B, Hq, Tq, Tk].

    One batched matmul and softmax with the mask tensor the layer was given (what ``split(...)`` per
    item at the padded length gives, without a Python loop over items). With ``out`` (a contiguous
    float32 [B, Hq, Tq, Tk]), the scores are written there and turned into weights in place."""
    group = raw.q.shape[1] // raw.k.shape[1]
    k = raw.k.float()
    if group > 1:
        k = k.repeat_interleave(group, dim=1)  # [B, Hq, Tk, d] each query head's key/value head
    s = torch.matmul(raw.q.float() * raw.scaling, k.transpose(2, 3), out=out)  # [B, Hq, Tq, Tk]
    if raw.softcap is not None:
        s = s.div_(raw.softcap).tanh_().mul_(raw.softcap)
    if raw.bias is not None:
        s = s.add_(raw.bias)
    if raw.mask is not None:
        s = s.masked_fill_(~raw.mask, -math.inf) if raw.mask.dtype == torch.bool else s.add_(raw.mask.float())
    elif raw.causal:
        tq, tk = s.shape[-2], s.shape[-1]
        s = s.masked_fill_(~torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq), -math.inf)
    if out is None:
        return torch.softmax(s, dim=-1)  # [B, Hq, Tq, Tk]
    # The softmax in place (no second [B, Hq, Tq, Tk]). A row that may see no key at all (left padding)
    # becomes zeros rather than NaN: its max is clamped to a finite value and its sum (0) to a tiny one;
    # any other row's sum is >= 1, so neither clamp changes it.
    top = s.amax(dim=-1, keepdim=True).clamp_(min=torch.finfo(s.dtype).min)  # [B, Hq, Tq, 1]
    s.sub_(top).exp_()
    return s.div_(s.sum(dim=-1, keepdim=True).clamp_(min=torch.finfo(s.dtype).tiny))


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("headmap_recorder", default=None)


@contextmanager
def recording(stop_after: int | None = None, keep_dense: bool = False) -> Iterator[Recorder]:
    """Within this block, every attention call of a model set to ``CAPTURE`` is recorded (this thread only).

    With ``stop_after``, the call that completes that many raises ``StopForward`` before its own attention
    runs: use ``capture_only`` to run a model that far. ``keep_dense``: see ``dense_forward``."""
    register()
    rec = Recorder(stop_after=stop_after, keep_dense=keep_dense)
    token = _RECORDER.set(rec)
    try:
        yield rec
    finally:
        _RECORDER.reset(token)


def dense_forward(model: Any, kwargs: dict[str, Any], calls: int) -> torch.Tensor:
    """Run ``model(**kwargs)`` (in inference mode) computing each attention call's weights *once*, in the forward
    pass: softmax(q·kᵀ) with the layer's own mask, written into one [calls, B, Hq, Tq, Tk] float32 tensor,
    and the layer's output is those weights times its values (what eager attention does), instead of SDPA
    followed by a second softmax from the captured q and k. Stops after the ``calls``-th call's weights, like
    ``capture_only``. For callers that want every layer's dense weights of a batch anyway (the corpus)."""
    with recording(stop_after=calls, keep_dense=True) as rec, suppress(StopForward):
        model(**kwargs)
    if rec.kept is None or len(rec.calls) != calls:
        raise RuntimeError(f"{type(model).__name__}: captured {len(rec.calls)} attention calls, expected {calls}")
    return rec.kept


def capture_only(model: Any, kwargs: dict[str, Any], calls: int) -> Recorder:
    """Run ``model(**kwargs)`` until its ``calls``-th attention call is recorded, and stop there (in inference
    mode): the queries and keys of every layer, without the last layer's attention output, feed-forward
    block or anything after it (about one layer in ``calls`` of the forward pass's work). A forward pass that
    makes fewer calls runs to its end; the caller checks ``len(rec.calls)``."""
    with recording(stop_after=calls) as rec, suppress(StopForward):
        model(**kwargs)
    return rec


# -- the functions registered with transformers --------------------------------------------------------


def capture_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function: records the call, then runs transformers' SDPA path.

    query [B, Hq, Tq, d], key/value [B, Hkv, Tk, d]; returns the output [B, Tq, Hq, d] and no weights.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    raw = _Raw(
        module=module,
        q=query.detach(),
        k=key.detach(),
        mask=attention_mask,
        causal=bool(causal) and query.shape[2] > 1,
        scaling=scale,
        softcap=softcap,
        sliding_window=sliding_window,
        bias=kwargs.get("position_bias"),
    )
    weights = None
    rec = _RECORDER.get()
    if rec is not None:
        rec.calls.append(raw)
        if rec.keep_dense:
            weights = rec.keep(len(rec.calls) - 1)  # [B, Hq, Tq, Tk]
        if rec.stop_after is not None and len(rec.calls) >= rec.stop_after:
            raise StopForward
    if weights is None and softcap is not None:  # SDPA cannot soft-cap: this layer the eager way (transient)
        weights = dense_weights(raw)  # [B, Hq, Tq, Tk]
    if weights is not None:
        return _weighted_values(weights, value), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


def _weighted_values(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """weights [B, Hq, Tq, Tk] float32 x value [B, Hkv, Tk, d] -> the attention output [B, Tq, Hq, d] in
    ``value``'s dtype, as eager attention computes it (each query head reads its key/value head)."""
    v = value.float()
    group = weights.shape[1] // v.shape[1]
    if group > 1:
        v = v.repeat_interleave(group, dim=1)  # [B, Hq, Tk, d]
    return torch.matmul(weights, v).transpose(1, 2).contiguous().to(value.dtype)  # [B, Tq, Hq, d]


def capture_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """An ``AttentionMaskInterface`` function: transformers' SDPA mask, remembering how it was made.

    The mask is built exactly as for ``sdpa`` (None when SDPA can use ``is_causal`` or no mask is needed);
    when one is built, its mask function with the padding folded in is kept, so a capture holds the
    function rather than the [B, 1, Tq, Tk] tensor.
    """
    from transformers.masking_utils import and_masks, padding_mask_function, prepare_padding_mask, sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    rec = _RECORDER.get()
    if rec is None or mask is None or args or kwargs.get("use_vmap", False):
        return mask  # positional calls and vmap-only mask functions: the layer keeps the tensor itself
    from transformers.masking_utils import causal_mask_function

    function: Callable[..., torch.Tensor] = kwargs.get("mask_function") or causal_mask_function  # type: ignore[assignment]
    kv_length, kv_offset = int(kwargs["kv_length"]), int(kwargs.get("kv_offset", 0))
    padding = prepare_padding_mask(kwargs.get("attention_mask"), kv_length, kv_offset)
    if padding is not None:
        function = and_masks(function, padding_mask_function(padding))
    q_offset = kwargs.get("q_offset", 0)
    if not isinstance(q_offset, int):
        return mask
    rec.masks[id(mask)] = _MaskMade(mask, function, q_offset, kv_offset)
    return mask


_registered = False


def register() -> None:
    """Register ``CAPTURE`` with transformers' ``AttentionInterface`` and ``AttentionMaskInterface`` (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CAPTURE, capture_attention)
    AttentionMaskInterface.register(CAPTURE, capture_mask)
    _registered = True
