"""Tiny random models of each supported family, written to a folder like a real Hugging Face checkpoint.

No downloads: configs are built in code, WordPiece vocabularies are written by hand and byte-level BPE
tokenizers are trained on a few sentences. Each model is small enough to load in well under a second.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

CORPUS = [
    "The cat sat on the mat because it was tired.",
    "Where is it? It is here, under the table.",
    "Attention heads look at other tokens in the sentence.",
    "A dog, a bird and a fish went to the market on Monday.",
    "café naïve résumé 你好世界 👍🏽 👩‍👩‍👧",
]

# A WordPiece vocabulary: specials, single characters (so nothing in CORPUS-like text is UNK),
# a few whole words and ## continuations.
_WORDS = ["the", "cat", "sat", "on", "mat", "because", "it", "was", "tired", "where", "is", "here", "attention"]
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'\"-:;()") + list("你好世界")
WORDPIECE_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + _WORDS
    + _CHARS
    + [f"##{c}" for c in _CHARS if c.isalnum() and c.isascii()]
    + ["##ing", "##ed", "##s"]
)

# Small enough to be fast, big enough to have several layers and heads and to hold a sentence pair.
LAYERS, HEADS, HIDDEN, POSITIONS = 2, 4, 32, 64
FAMILIES = ("bert", "roberta", "distilbert", "gpt2")


def _wordpiece_vocab(folder: Path) -> dict[str, int]:
    """Write ``vocab.txt`` (as a real checkpoint has) and return it as the dict transformers v5 takes."""
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    return {token: i for i, token in enumerate(WORDPIECE_VOCAB)}


def _byte_level_bpe(specials: list[str], vocab_size: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE on ``CORPUS``; return (vocab, merges) in the form transformers v5 takes."""
    import json

    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(CORPUS * 4, vocab_size=vocab_size, min_frequency=1, special_tokens=specials)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def make_bert(folder: Path, lm: bool = False) -> Path:
    """``lm``: saved as ``BertForMaskedLM`` (with its masked-LM head), else as the bare ``BertModel``."""
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab=_wordpiece_vocab(folder), do_lower_case=True, model_max_length=POSITIONS)
    config = BertConfig(
        vocab_size=len(WORDPIECE_VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=POSITIONS,
        type_vocab_size=2,
        pad_token_id=0,
    )
    torch.manual_seed(1)
    (BertForMaskedLM if lm else BertModel)(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_distilbert(folder: Path) -> Path:
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = DistilBertTokenizerFast(vocab=_wordpiece_vocab(folder), do_lower_case=True, model_max_length=POSITIONS)
    config = DistilBertConfig(
        vocab_size=len(WORDPIECE_VOCAB),
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        hidden_dim=2 * HIDDEN,
        max_position_embeddings=POSITIONS,
        pad_token_id=0,
    )
    torch.manual_seed(2)
    DistilBertModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_roberta(folder: Path) -> Path:
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab, merges = _byte_level_bpe(specials)
    tok = RobertaTokenizerFast(
        vocab=vocab,
        merges=merges,
        add_prefix_space=False,
        trim_offsets=True,
        model_max_length=POSITIONS - 2,
    )
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=POSITIONS,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(3)
    RobertaModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_gpt2(folder: Path, lm: bool = False) -> Path:
    """``lm``: saved as ``GPT2LMHeadModel`` (with its causal-LM head), else as the bare ``GPT2Model``."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _byte_level_bpe(["<|endoftext|>"])
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=POSITIONS)
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=POSITIONS,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(4)
    (GPT2LMHeadModel if lm else GPT2Model)(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


MAKERS = {"bert": make_bert, "roberta": make_roberta, "distilbert": make_distilbert, "gpt2": make_gpt2}


def make_all(root: Path) -> dict[str, Path]:
    """Write one tiny model per family under ``root``; returns ``{family: folder}``."""
    return {family: MAKERS[family](root / f"tiny-{family}") for family in FAMILIES}


# -- decoder LLM families (grouped-query attention, sliding windows, soft-capping) ------------------

#: Query heads and key/value heads of the tiny LLMs: 4 query heads share 2 key/value heads (GQA).
LLM_HEADS, LLM_KV_HEADS = 4, 2


@functools.cache
def _trained_byte_level_bpe() -> str:
    """A byte-level BPE trained on ``CORPUS`` once per process, as tokenizer.json text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    return str(bpe.to_str())


def _byte_level_tokenizer(folder: Path, max_length: int) -> object:
    """A byte-level BPE (the GPT-2/Llama-3/Qwen style) trained on ``CORPUS``, as a generic fast tokenizer."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_byte_level_bpe()),
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_max_length=max_length,
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return tok


def _llm_common(tok: object) -> dict[str, object]:
    return {
        "vocab_size": len(tok),  # type: ignore[arg-type]
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": LLM_HEADS,
        "num_key_value_heads": LLM_KV_HEADS,
        "max_position_embeddings": POSITIONS,
        "bos_token_id": tok.bos_token_id,  # type: ignore[attr-defined]
        "eos_token_id": tok.eos_token_id,  # type: ignore[attr-defined]
        "pad_token_id": tok.pad_token_id,  # type: ignore[attr-defined]
    }


def make_llama(folder: Path, lm: bool = False) -> Path:
    """``lm``: saved as ``LlamaForCausalLM`` (with its causal-LM head), else as the bare ``LlamaModel``."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    config = LlamaConfig(**_llm_common(_byte_level_tokenizer(folder, POSITIONS)))
    torch.manual_seed(5)
    (LlamaForCausalLM if lm else LlamaModel)(config).eval().save_pretrained(folder)
    return folder


def make_qwen2(folder: Path) -> Path:
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(**_llm_common(_byte_level_tokenizer(folder, POSITIONS)))
    torch.manual_seed(6)
    Qwen2Model(config).eval().save_pretrained(folder)
    return folder


#: Mistral's sliding window: shorter than the test inputs, so it changes the weights.
SLIDING_WINDOW = 4


def make_mistral(folder: Path) -> Path:
    from transformers import MistralConfig, MistralModel

    config = MistralConfig(**_llm_common(_byte_level_tokenizer(folder, POSITIONS)), sliding_window=SLIDING_WINDOW)
    torch.manual_seed(7)
    MistralModel(config).eval().save_pretrained(folder)
    return folder


def make_gemma2(folder: Path) -> Path:
    """Gemma 2: attention logit soft-capping, and sliding-window layers alternating with full ones."""
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        **_llm_common(_byte_level_tokenizer(folder, POSITIONS)),
        head_dim=HIDDEN // LLM_HEADS,
        sliding_window=SLIDING_WINDOW,
        attn_logit_softcapping=2.0,  # small, so the cap bends the random model's logits visibly
        query_pre_attn_scalar=HIDDEN // LLM_HEADS,
    )
    torch.manual_seed(8)
    Gemma2Model(config).eval().save_pretrained(folder)
    return folder


def make_phi3(folder: Path) -> Path:
    from transformers import Phi3Config, Phi3Model

    config = Phi3Config(**_llm_common(_byte_level_tokenizer(folder, POSITIONS)))
    torch.manual_seed(9)
    Phi3Model(config).eval().save_pretrained(folder)
    return folder


LLM_MAKERS = {
    "llama": make_llama,
    "qwen2": make_qwen2,
    "mistral": make_mistral,
    "gemma2": make_gemma2,
    "phi3": make_phi3,
}


# -- encoder–decoder families (cross-attention) -----------------------------------------------------

#: Source/target sentences for the encoder–decoder tests (the target is teacher-forced).
SEQ2SEQ_CORPUS = [*CORPUS, "Die Katze saß auf der Matte, weil sie müde war.", "Le chat est assis sur le tapis."]


@functools.cache
def _trained_unigram() -> tuple[tuple[str, float], ...]:
    """A SentencePiece-style Unigram (``▁`` marks a word start) trained on the corpus once: (piece, score)."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    uni.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", shrinking_factor=0.75
    )
    uni.train_from_iterator(SEQ2SEQ_CORPUS * 4, trainer=trainer)
    return tuple((str(p), float(s)) for p, s in json.loads(uni.to_str())["model"]["vocab"])


def _seq2seq_sizes() -> dict[str, int]:
    return {"encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
            "decoder_attention_heads": HEADS, "encoder_ffn_dim": 2 * HIDDEN, "decoder_ffn_dim": 2 * HIDDEN,
            "d_model": HIDDEN, "max_position_embeddings": POSITIONS}  # fmt: skip


def make_t5(folder: Path) -> Path:
    """T5: relative position bias (added to the logits), no 1/√d scaling, pad as the decoder start token."""
    from transformers import T5Config, T5Model, T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = T5Tokenizer(vocab=list(_trained_unigram()), extra_ids=0, model_max_length=POSITIONS)
    config = T5Config(
        vocab_size=len(tok),
        d_model=HIDDEN,
        d_kv=HIDDEN // HEADS,
        d_ff=2 * HIDDEN,
        num_layers=LAYERS,
        num_decoder_layers=LAYERS,
        num_heads=HEADS,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(10)
    T5Model(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_bart(folder: Path) -> Path:
    """BART: byte-level BPE (RoBERTa's), learned positions, ``</s>`` as the decoder start token."""
    from transformers import BartConfig, BartModel, BartTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = BartTokenizer(vocab=vocab, merges=merges, add_prefix_space=False, trim_offsets=True,
                        model_max_length=POSITIONS)  # fmt: skip
    config = BartConfig(
        vocab_size=len(tok),
        **_seq2seq_sizes(),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=None,
    )
    torch.manual_seed(11)
    BartModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_marian(folder: Path) -> Path:
    """Marian: sinusoidal positions, a SentencePiece Unigram vocabulary, ``</s>`` appended, pad as decoder start.

    Real Marian checkpoints ship ``source.spm``/``target.spm`` for the slow ``MarianTokenizer``; this one
    carries the same kind of Unigram vocabulary as a fast ``tokenizer.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(_trained_unigram())
    uni = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    uni.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    uni.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    uni.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=uni, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                  model_max_length=POSITIONS)  # fmt: skip
    config = MarianConfig(
        vocab_size=len(tok),
        **_seq2seq_sizes(),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        forced_eos_token_id=None,
    )
    torch.manual_seed(12)
    MarianModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


SEQ2SEQ_MAKERS = {"t5": make_t5, "bart": make_bart, "marian": make_marian}


def served_engine(client: Any, name: str) -> Any:
    """The ``HFEngine`` a test app's registry serves as ``name`` (a TestClient over ``create_app``)."""
    from headmap.models.hf import HFEngine

    engine = client.app.state.registry.get(name)
    assert isinstance(engine, HFEngine)
    return engine
