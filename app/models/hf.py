"""Hugging Face models (any ``AutoModel`` folder) as attention engines.

A model whose attention routes through transformers' ``AttentionInterface`` runs its SDPA path with the
capture (``capture.py``): each item comes back as a ``Captured`` state and only the layers and heads a
request asks for are ever computed. Other models run eagerly with ``output_attentions``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import capture, tokentext
from .engine import Attention, Encoded, Engine, Kind, Output, Seq2SeqAttention, TooLong

log = logging.getLogger("headmap")


@dataclass(kw_only=True)
class HFEngine(Engine):
    """A Hugging Face ``AutoModel``: captured q/k on its SDPA path when ``capture``, else eager attention."""

    model: Any  # the base model (no head): its attention is what every request reads
    uses_token_types: bool
    capture: bool = False
    #: Encoder–decoder models: the token the decoder starts from (``config.decoder_start_token_id``).
    decoder_start_id: int | None = None
    #: The checkpoint's masked-LM or causal-LM model around ``model`` (sharing its weights), None without a head.
    lm: Any = None

    def run_lm(self, enc: Encoded) -> tuple[Attention, torch.Tensor]:
        """One input through the LM model: its attention (as ``run`` gives it) and its logits [T, V] float32.

        The same forward pass gives both, so the attention is that of the model whose predictions are shown."""
        if self.lm is None:
            raise RuntimeError(f"{self.name} has no masked-LM or causal-LM head")
        ids, mask, types = self.pad([enc])  # each (1, T)
        kwargs = self._inputs(ids, mask, types)
        with torch.inference_mode():
            if self.capture:
                with capture.recording() as rec:
                    logits = self.lm(**kwargs).logits  # (1, T, V)
                if len(rec.calls) != self.num_layers:
                    raise RuntimeError(
                        f"{self.name}: captured {len(rec.calls)} attention calls, expected {self.num_layers}"
                    )
                attention: Attention = rec.split([len(enc)])[0]
            else:
                out = self.lm(**kwargs, output_attentions=True)
                logits = out.logits  # (1, T, V)
                attention = torch.stack([a[0] for a in out.attentions]).float()  # (L, H, T, T)
        return attention, logits[0].float()  # (T, V)

    def generate(self, enc: Encoded, max_new_tokens: int) -> list[int]:
        """Greedy continuation of ``enc`` (transformers' ``generate`` with ``do_sample=False``): the new token ids."""
        if self.lm is None or self.kind != "decoder":
            raise RuntimeError(f"{self.name} cannot generate")
        ids = torch.tensor([enc.input_ids])  # (1, T)
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.lm.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad if pad is not None else eos,
            )  # (1, T + n)
        return [int(i) for i in out[0, ids.shape[1] :]]

    def _inputs(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> dict[str, torch.Tensor]:
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types:
            kwargs["token_type_ids"] = types
        return kwargs

    def run(self, batch: list[Encoded]) -> list[Output]:
        """Each item's ``Captured`` state (capture models), else the dense eager attention.

        Encoder–decoder models give each item's ``Seq2SeqAttention`` (encoder self, decoder self, cross)."""
        if self.kind == "encoder-decoder" and batch:
            return list(self._run_seq2seq(batch))
        if not self.capture or not batch:
            return super().run(batch)
        ids, mask, types = self.pad(batch)  # each (B, T)
        with torch.inference_mode():  # the layers' queries and keys are all it needs: stops at the last one
            rec = capture.capture_only(self.model, self._inputs(ids, mask, types), self.num_layers)
        if len(rec.calls) != self.num_layers:
            raise RuntimeError(f"{self.name}: captured {len(rec.calls)} attention calls, expected {self.num_layers}")
        return list(rec.split([len(e) for e in batch]))

    # -- encoder–decoder models -----------------------------------------------------------------------
    def encode_target(self, target: str | None, truncate: bool = False) -> Encoded:
        """The decoder's input: its start token, then ``target`` tokenized as a target text (teacher forcing).

        Causal attention never looks ahead, so every row equals what the model computes in training (where the
        last target token is not an input) and one more row shows what the last target token attends to.
        Without ``target``: the start token alone, the decoder's first step. ``TooLong`` past ``max_tokens``.
        """
        if self.decoder_start_id is None:
            raise NotImplementedError(f"{self.name} is not an encoder-decoder model")
        start = self.tokenizer.convert_ids_to_tokens([self.decoder_start_id])[0]
        if target is None:
            empty: list[Any] = []
            return self._target_encoded("", start, empty, empty, empty, empty, False)
        with self._tok_lock:
            full = self._tokenize_target(target, None)
            truncated = 1 + len(full["input_ids"]) > self.max_tokens
            if truncated:
                if not truncate:
                    raise TooLong(1 + len(full["input_ids"]), self.max_tokens)
                full = self._tokenize_target(target, self.max_tokens - 1)
            ids: list[int] = list(full["input_ids"])
            tokens = [str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)]
            words = list(full.word_ids())
        return self._target_encoded(
            target,
            start,
            ids,
            tokens,
            list(full["offset_mapping"]),
            list(full["special_tokens_mask"]),
            truncated,
            words,
        )

    def _tokenize_target(self, target: str, max_length: int | None) -> Any:
        return self.tokenizer(
            text_target=target,
            truncation=max_length is not None,
            max_length=max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            verbose=False,
        )

    def _target_encoded(
        self,
        text: str,
        start: str,
        ids: list[int],
        tokens: list[str],
        offsets: list[Any],
        added: list[int],
        truncated: bool,
        words: list[int | None] | None = None,
    ) -> Encoded:
        """``Encoded`` of the decoder input: ``start`` (special, no offsets), then the target's own tokens."""
        special_ids = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        special = [True] + [bool(a) or i in special_ids for a, i in zip(added, ids, strict=True)]
        offs: list[list[int] | None] = [None]
        offs += [None if a else [int(x), int(y)] for (x, y), a in zip(offsets, added, strict=True)]
        all_ids = [int(self.decoder_start_id or 0), *ids]
        all_tokens = [start, *tokens]
        segments = [0] * len(all_ids)
        unk = self.tokenizer.unk_token_id
        return Encoded(
            input_ids=all_ids,
            token_type_ids=None,
            tokens=all_tokens,
            offsets=offs,
            special=special,
            unknown=[unk is not None and i == unk for i in all_ids],
            segments=segments,
            truncated=truncated,
            labels=tokentext.token_labels([text], all_tokens, offs, segments),
            word_ids=tokentext.word_ids([text], all_tokens, offs, segments, special, [None, *(words or [])]),
        )

    def _seq2seq_inputs(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        """Source and decoder inputs of a batch, each right-padded: (B, S_max) and (B, T_max)."""
        targets = [self._target_of(e) for e in batch]
        ids, mask, _ = self.pad(batch)  # each (B, S)
        dec_ids, dec_mask, _ = self.pad(targets)  # each (B, T)
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec_ids,
                "decoder_attention_mask": dec_mask}  # fmt: skip

    def _target_of(self, enc: Encoded) -> Encoded:
        return enc.target if enc.target is not None else self.encode_target(None)

    def _run_seq2seq(self, batch: list[Encoded]) -> list[Seq2SeqAttention]:
        """Encoder self-, decoder self- and cross-attention of each item, padding cut away."""
        kwargs = self._seq2seq_inputs(batch)
        s_len = [len(e) for e in batch]
        t_len = [len(self._target_of(e)) for e in batch]
        dec_layers = self.decoder_layers or self.num_layers
        with torch.inference_mode():
            if self.capture:
                with capture.recording() as rec:
                    self.model(**kwargs)
                if len(rec.calls) != self.num_layers + 2 * dec_layers:
                    raise RuntimeError(
                        f"{self.name}: captured {len(rec.calls)} attention calls, expected "
                        f"{self.num_layers} + 2 x {dec_layers}"
                    )
                return [Seq2SeqAttention(*parts) for parts in rec.split_seq2seq(self.num_layers, s_len, t_len)]
            out = self.model(**kwargs, output_attentions=True)
        enc = torch.stack(out.encoder_attentions).float()  # (L, B, H, S, S)
        dec = torch.stack(out.decoder_attentions).float()  # (Ld, B, Hd, T, T)
        cross = torch.stack(out.cross_attentions).float()  # (Ld, B, Hd, T, S)
        return [
            Seq2SeqAttention(enc[:, i, :, :s, :s], dec[:, i, :, :t, :t], cross[:, i, :, :t, :s])
            for i, (s, t) in enumerate(zip(s_len, t_len, strict=True))
        ]

    def _attention(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        # An encoder-decoder gives its encoder's self-attention here (corpus statistics); ``run`` gives all three.
        model = self.model.get_encoder() if self.kind == "encoder-decoder" else self.model
        kwargs = self._inputs(ids, mask, types)
        if self.capture:  # every layer's weights are wanted: computed once, in the forward pass, and kept
            # (L, B, H, T, T): one batched softmax per layer with the layer's own mask, padding included
            return capture.dense_forward(model, kwargs, self.num_layers)
        layers: list[torch.Tensor | None] = list(model(**kwargs, output_attentions=True).attentions)
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


def enable_capture(model: Any, uses_token_types: bool) -> bool:
    """Switch ``model`` to the capture if its attention routes through ``AttentionInterface``; True if it did.

    A probe (two short inputs, one padded) must give eager ``output_attentions`` on every layer (to 1e-4
    in float32; half precision rounds eager's own matmul, so 2e-2 there), otherwise the model stays
    eager. ``model`` is left with eager or capture attention.
    """
    if not getattr(model, "is_backend_compatible", lambda: False)():
        return False
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8:
        return False
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 0, 0]])  # (2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # (2, 6)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    atol = 1e-4 if model.dtype == torch.float32 else 2e-2
    if uses_token_types:
        kwargs["token_type_ids"] = torch.zeros_like(ids)

    def agrees(out: Any, rec: capture.Recorder) -> bool:
        eager = out.attentions  # L x (2, H, 6, 6)
        items = rec.split([6, 4])
        return len(eager) == len(rec.calls) and all(
            torch.allclose(item.weights(layer), eager[layer][i, :, :n, :n].float(), atol=atol, rtol=0)
            for i, (item, n) in enumerate(zip(items, (6, 4), strict=True))
            for layer in range(len(eager))
        )

    return _probe_capture(model, kwargs, agrees)


def _probe_capture(
    model: Any, kwargs: dict[str, torch.Tensor], agrees: Callable[[Any, capture.Recorder], bool]
) -> bool:
    """Run the probe ``kwargs`` eagerly (``output_attentions``) and on the capture; keep the capture only when
    ``agrees(eager_output, recorder)``, else put ``model`` back on eager attention. Any failure means eager."""
    try:
        with torch.inference_mode():
            eager = model(**kwargs, output_attentions=True)
            capture.register()
            model.set_attn_implementation(capture.CAPTURE)
            if model.config._attn_implementation != capture.CAPTURE:
                return False
            with capture.recording() as rec:
                model(**kwargs)
            ok = agrees(eager, rec)
    except Exception:  # any failure of the capture path means: stay eager
        log.warning("%s: attention capture failed, using eager attention", type(model).__name__, exc_info=True)
        ok = False
    if not ok:
        model.set_attn_implementation("eager")
    return ok


def enable_capture_seq2seq(model: Any) -> bool:
    """``enable_capture`` for an encoder–decoder: its encoder self-, decoder self- and cross-attention on a probe.

    T5, BART, Marian and their kin call ``ALL_ATTENTION_FUNCTIONS`` although they do not declare
    ``_supports_attention_backend``; the probe (two sources and two targets of different lengths, padded)
    is what decides: every layer of all three must equal eager ``output_attentions``, else the model stays eager.
    """
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8 or not hasattr(model, "get_encoder"):
        return False
    kwargs = {
        "input_ids": torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 0, 0]]),  # (2, 6)
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),  # (2, 6)
        "decoder_input_ids": torch.tensor([[0, 7, 5], [0, 3, 0]]),  # (2, 3)
        "decoder_attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),  # (2, 3)
    }
    atol = 1e-4 if model.dtype == torch.float32 else 2e-2

    def agrees(eager: Any, rec: capture.Recorder) -> bool:
        layers = len(eager.encoder_attentions)
        if len(rec.calls) != layers + 2 * len(eager.decoder_attentions):
            return False
        items = rec.split_seq2seq(layers, [6, 4], [3, 2])
        return all(
            torch.allclose(part.weights(layer), want[layer][i, :, :nq, :nk].float(), atol=atol, rtol=0)
            for i, (parts, s, t) in enumerate(zip(items, (6, 4), (3, 2), strict=True))
            for part, want, nq, nk in zip(
                parts,
                (eager.encoder_attentions, eager.decoder_attentions, eager.cross_attentions),
                (s, t, t),
                (s, t, s),
                strict=True,
            )
            for layer in range(part.num_layers)
        )

    return _probe_capture(model, kwargs, agrees)


def _kind(config: Any) -> Kind:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    mt = config.model_type
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def _can_predict(config: Any) -> bool:
    """Whether the checkpoint's architecture has a masked-LM or causal-LM head (``config.architectures``)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    heads = {
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type),
        MODEL_FOR_MASKED_LM_MAPPING_NAMES.get(config.model_type),
    }
    return bool(set(getattr(config, "architectures", None) or []) & (heads - {None}))


def model_max_tokens(config: Any, tokenizer: Any) -> int:
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


def _lm_class(config: Any, kind: Kind) -> Any:
    """The Auto class that loads the checkpoint's own LM head (masked-LM for encoders, causal-LM for
    decoders), or None when its saved architecture has none (``config.architectures``)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    if not _can_predict(config):
        return None
    return {"encoder": AutoModelForMaskedLM, "decoder": AutoModelForCausalLM}.get(kind)


def load_hf(
    name: str,
    path: Path,
    description: str | None = None,
    *,
    dtype: str = "float32",
    source: str | None = None,
) -> HFEngine:
    """Load a local Hugging Face model folder (no network, no remote code) as an attention engine."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a progress bar is noise in a server log
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    auto = _lm_class(config, _kind(config)) or AutoModel  # with its LM head when the checkpoint has one
    model = auto.from_pretrained(
        path, local_files_only=True, trust_remote_code=False, attn_implementation="eager", dtype=getattr(torch, dtype)
    ).eval()
    return engine_of(name, model, tokenizer, description=description, source=source or path.name)


def engine_of(
    name: str, model: Any, tokenizer: Any, *, description: str | None = None, source: str, capture: bool = True
) -> HFEngine:
    """An ``HFEngine`` over a loaded model and its fast tokenizer, with the facts ``/api/models`` reports.

    ``capture``: switch the model to the attention capture when it supports it (``enable_capture``). A model
    the caller owns (notebooks) is left on eager attention, so its own ``output_attentions`` keeps working.
    A model with an LM head (``BertForMaskedLM``, ``LlamaForCausalLM``) serves attention from its base model
    and predictions from the whole."""
    lm = None
    base = getattr(model, "base_model", model)
    if base is not model and model.get_output_embeddings() is not None:
        lm, model = model, base
    config = model.config
    kind = _kind(config)
    layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(
        getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or int(config.hidden_size) // heads
    )
    gqa = f" ({kv_heads} key/value heads)" if kv_heads != heads else ""
    seq2seq = kind == "encoder-decoder"
    if seq2seq:
        lm = None  # predictions and generation are for encoders and decoders (an encoder-decoder's LM is not wired)
    dec_layers = int(getattr(config, "decoder_layers", None) or getattr(config, "num_decoder_layers", None) or layers)
    dec_heads = int(getattr(config, "decoder_attention_heads", None) or heads)
    if seq2seq:
        gqa += f", decoder {dec_layers} layers x {dec_heads} heads"
        start = getattr(config, "decoder_start_token_id", None)
        start = start if start is not None else getattr(config, "pad_token_id", None)
        if start is None:
            raise ValueError(f"{source}: an encoder-decoder model needs config.decoder_start_token_id")
    uses_types = "token_type_ids" in tokenizer.model_input_names
    if not capture:
        captured = False
    elif seq2seq:
        captured = enable_capture_seq2seq(model)
    else:
        captured = enable_capture(model, uses_types)
    return HFEngine(
        name=name,
        kind=kind,
        description=description or f"{config.model_type} {kind} from {source}: {layers} layers x {heads} heads{gqa}",
        num_layers=layers,
        num_heads=heads,
        max_tokens=model_max_tokens(config, tokenizer),
        tokenizer=tokenizer,
        family=str(config.model_type),
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        num_parameters=sum(p.numel() for p in model.parameters()),
        can_predict=lm is not None,
        source=source,
        model=model,
        uses_token_types=uses_types,
        capture=captured,
        decoder_layers=dec_layers if seq2seq else None,
        decoder_heads=dec_heads if seq2seq else None,
        decoder_start_id=int(start) if seq2seq and start is not None else None,
        lm=_same_attention(lm, captured),
    )


def _same_attention(lm: Any, captured: bool) -> Any:
    """``lm`` on the attention implementation its base model was given (capture or eager), or None."""
    if lm is not None:
        lm.set_attn_implementation(capture.CAPTURE if captured else "eager")
    return lm
