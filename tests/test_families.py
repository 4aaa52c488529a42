"""Every supported family through the API, against transformers' own eager ``output_attentions``.

Each family is a tiny random model built from its own config class, with a tokenizer trained in the
test (WordPiece for BERT/DistilBERT, byte-level BPE for RoBERTa, GPT-2 and the LLMs). The served model
runs on the capture path (SDPA + captured q/k); the reference is the same folder loaded independently
with ``attn_implementation="eager"`` and ``output_attentions=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.models.capture import Captured, LayerCapture
from headmap.models.hf import load_hf
from headmap.schemas.attention import AttentionRequest
from headmap.serving import attention as service
from headmap.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import (
    HEADS,
    HIDDEN,
    LAYERS,
    LLM_HEADS,
    LLM_KV_HEADS,
    LLM_MAKERS,
    MAKERS,
    SLIDING_WINDOW,
    served_engine,
)

FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "llama", "qwen2", "mistral", "gemma2", "phi3"]
ALL_MAKERS = {**MAKERS, **LLM_MAKERS}
#: Longer than the sliding window of Mistral and Gemma 2, so the window changes the weights.
TEXT = "The cat sat on the mat because it was tired. Where is it?"
SHORT = "Attention heads look."
#: JSON weights are rounded to 4 decimals (<= 5e-5) on top of the float32 arithmetic.
JSON_ATOL = 5e-5 + 1e-5
EXACT = 1e-5


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: ALL_MAKERS[family](root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def client(paths: dict[str, Path]) -> Iterator[TestClient]:
    models = ",".join(f"{family}={path}" for family, path in paths.items())
    app = create_app(Settings(builtin_models="", models=models, default_model="bert"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def references(paths: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """``{family: (tokenizer, eager model)}`` loaded independently of Headmap."""
    from transformers import AutoModel, AutoTokenizer

    out = {}
    for family, path in paths.items():
        model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
        out[family] = (AutoTokenizer.from_pretrained(path), model)
    return out


def eager(references: dict[str, tuple[Any, Any]], family: str, texts: list[str]) -> list[np.ndarray]:
    """transformers' eager attention of each text alone: list of (L, H, T, T) float64."""
    tok, model = references[family]
    out = []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        if family != "bert":
            enc.pop("token_type_ids", None)
        with torch.inference_mode():
            layers = model(**enc, output_attentions=True).attentions  # L x (1, H, T, T)
        out.append(torch.cat(layers).double().numpy())
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_api_weights_equal_eager(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    engine = served_engine(client, family)
    assert engine.capture, f"{family} should run on the capture path"
    (expected,) = eager(references, family, [TEXT])
    body = client.post("/api/attention", json={"text": TEXT, "model": family}).json()
    tok = references[family][0]
    assert body["tokens"] == tok.convert_ids_to_tokens(tok(TEXT)["input_ids"])
    got = np.array(body["attention"])
    assert got.shape == expected.shape == (LAYERS, engine.num_heads, len(body["tokens"]), len(body["tokens"]))
    np.testing.assert_allclose(got, expected, atol=JSON_ATOL, rtol=0)
    # Unrounded, the values the API encodes equal eager to 1e-5.
    result = service.compute_sync(client.app.state.registry, AttentionRequest(text=TEXT, model=family))  # type: ignore[attr-defined]
    assert isinstance(result.attention, Captured)
    exact = service.select(result.attention, result.layers, result.heads).double().numpy()
    np.testing.assert_allclose(exact, expected, atol=EXACT, rtol=0)


@pytest.mark.parametrize("family", ["bert", "llama", "gemma2"])
def test_capture_stops_after_the_last_layers_queries_and_keys(client: TestClient, family: str) -> None:
    """Attention needs every layer's queries and keys, not the last layer's attention output or what follows:
    the capture stops the forward pass there (issue 19). The feed-forward block of every layer but the last
    runs once per pass; the last one's never does, while the weights still equal eager (the test above)."""
    engine = served_engine(client, family)
    blocks = [m for name, m in engine.model.named_modules() if name.endswith(("mlp", "intermediate"))]
    assert len(blocks) == LAYERS, [type(m).__name__ for m in blocks]
    calls = [0] * LAYERS
    hooks = [m.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i, m in enumerate(blocks)]
    try:
        (out,) = engine.run([engine.encode(TEXT)])
        assert isinstance(out, Captured) and len(out.layers) == LAYERS
        assert calls == [1] * (LAYERS - 1) + [0]
        if engine.lm is not None:  # predictions need the logits: the LM model runs to its end
            engine.run_lm(engine.encode(TEXT))
            assert calls == [2] * (LAYERS - 1) + [1]
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_subset_and_batch_equal_eager(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """Asked layers/heads (in the caller's order), and two inputs of different length padded into one batch."""
    engine = served_engine(client, family)
    long, short = eager(references, family, [TEXT, SHORT])
    body = client.post("/api/attention", json={"text": TEXT, "model": family, "layers": [1], "heads": [3, 0]}).json()
    np.testing.assert_allclose(np.array(body["attention"]), long[[1]][:, [3, 0]], atol=JSON_ATOL, rtol=0)
    items = engine.run([engine.encode(TEXT), engine.encode(SHORT)])  # one padded batch
    for item, expected in zip(items, (long, short), strict=True):
        assert isinstance(item, Captured)
        got = item.select([0, 1], list(range(engine.num_heads))).double().numpy()
        np.testing.assert_allclose(got, expected, atol=EXACT, rtol=0)


@pytest.mark.parametrize("family", ["bert", "gpt2", "qwen2", "mistral", "gemma2"])
def test_tiles_equal_eager(client: TestClient, references, family: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A tile of queries × keys equals eager's, and no more queries than the tile's are ever scored."""
    engine = served_engine(client, family)
    (expected,) = eager(references, family, [TEXT])
    (item,) = engine.run([engine.encode(TEXT)])
    assert isinstance(item, Captured)
    t = item.num_tokens
    scored_rows: list[int] = []
    original = LayerCapture.scores

    def spy(self: LayerCapture, heads: torch.Tensor, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
        scored_rows.append(q1 - q0)
        return original(self, heads, q0, q1, k0, k1)

    monkeypatch.setattr(LayerCapture, "scores", spy)
    for q_range, k_range in (((3, 7), (1, 5)), ((t - 2, t), (0, t)), ((0, t), (t - 3, t))):
        got = item.weights(1, [2, 1], q_range, k_range).double().numpy()  # [2, q, k]
        want = expected[1, [2, 1], q_range[0] : q_range[1], k_range[0] : k_range[1]]
        np.testing.assert_allclose(got, want, atol=EXACT, rtol=0)
        assert max(scored_rows) == q_range[1] - q_range[0]
        scored_rows.clear()


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma2", "phi3"])
def test_grouped_query_heads_and_held_bytes(client: TestClient, family: str) -> None:
    """GQA models report their key/value heads, and a capture holds q and k only: L × (Hq + Hkv) × T × d floats."""
    engine = served_engine(client, family)
    head_dim = HIDDEN // LLM_HEADS
    assert (engine.family, engine.num_heads, engine.num_kv_heads, engine.head_dim) == (
        family,
        LLM_HEADS,
        LLM_KV_HEADS,
        head_dim,
    )
    (item,) = engine.run([engine.encode(TEXT)])
    assert isinstance(item, Captured)
    assert item.num_kv_heads == LLM_KV_HEADS
    t = item.num_tokens
    assert t > SLIDING_WINDOW
    assert item.nbytes == LAYERS * (LLM_HEADS + LLM_KV_HEADS) * t * head_dim * 4


def test_encoder_facts(client: TestClient) -> None:
    engine = served_engine(client, "bert")
    assert (engine.family, engine.num_heads, engine.num_kv_heads, engine.head_dim) == ("bert", HEADS, HEADS, 8)


def test_gemma2_softcap_and_window_matter(references) -> None:  # type: ignore[no-untyped-def]
    """The Gemma 2 reference really exercises soft-capping and the sliding window (else the test above is weak)."""
    _, model = references["gemma2"]
    assert model.config.attn_logit_softcapping is not None
    assert [t == "sliding_attention" for t in model.config.layer_types] == [True, False]
    (attn,) = eager(references, "gemma2", [TEXT])
    t = attn.shape[-1]
    q = t - 1
    assert (attn[0, :, q, : q - SLIDING_WINDOW + 1] == 0).all()  # layer 0 slides: old keys get nothing
    assert (attn[1, :, q, : q - SLIDING_WINDOW + 1] > 0).all()  # layer 1 is full


def test_model_without_the_interface_falls_back_to_eager(
    paths: dict[str, Path], references, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from transformers import BertModel

    monkeypatch.setattr(BertModel, "_supports_attention_backend", False)
    engine = load_hf("eager-bert", paths["bert"])
    assert not engine.capture
    (expected,) = eager(references, "bert", [TEXT])
    (item,) = engine.run([engine.encode(TEXT)])
    assert isinstance(item, torch.Tensor)
    np.testing.assert_allclose(item.double().numpy(), expected, atol=EXACT, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_eager(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """The corpus path: one right-padded batch as a dense (L, B, H, T, T) tensor (one softmax per layer on the
    capture path); each text's own block equals eager on the text alone, and padded keys get no weight."""
    engine = served_engine(client, family)
    long, short = eager(references, family, [TEXT, SHORT])
    attn = engine.padded([engine.encode(TEXT), engine.encode(SHORT)])  # (L, 2, H, T, T)
    n = short.shape[-1]
    np.testing.assert_allclose(attn[:, 0].double().numpy(), long, atol=EXACT, rtol=0)
    np.testing.assert_allclose(attn[:, 1, :, :n, :n].double().numpy(), short, atol=EXACT, rtol=0)
    assert float(attn[:, 1, :, :n, n:].abs().max()) < EXACT


@pytest.mark.parametrize("family", ["bert", "llama", "gemma2"])
def test_weights_computed_in_the_forward_pass_run_it_as_eager_does(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """``capture.dense_forward`` (the corpus path): each layer's weights are computed once and its output is
    weights x values instead of SDPA's. Every layer's weights of a *left*-padded batch equal eager's on the
    same batch at the rows eager defines the same way, and the SDPA kernel is never called. A query that may
    see no key (a padded position before any text, causal models) gets a row of zeros, not NaN: NaN there
    would reach every later layer through 0 x NaN in the weighted sum. Eager gives such a row uniform
    weights instead, so those rows are left out of the comparison."""
    import transformers.integrations.sdpa_attention as sdpa

    from headmap.models import capture

    engine = served_engine(client, family)
    tok, model = references[family]
    tok.padding_side = "left"
    try:
        enc = tok([TEXT, SHORT], padding=True, return_tensors="pt")
    finally:
        tok.padding_side = "right"
    if family != "bert":
        enc.pop("token_type_ids", None)
    with torch.inference_mode():
        want = torch.stack(model(**enc, output_attentions=True).attentions).double()  # (L, B, H, T, T)
    called: list[int] = []
    original = sdpa.sdpa_attention_forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        called.append(1)
        return original(*args, **kwargs)

    sdpa.sdpa_attention_forward = spy
    try:
        with torch.inference_mode():
            got = capture.dense_forward(engine.model, dict(enc), LAYERS).double()  # (L, B, H, T, T)
    finally:
        sdpa.sdpa_attention_forward = original
    assert not called
    assert got.shape == want.shape and bool(torch.isfinite(got).all())
    sums = got.sum(-1)  # (L, B, H, T)
    blind = sums < 0.5  # rows that may see no key
    assert torch.allclose(sums[~blind], torch.ones(()).double(), atol=1e-5)
    assert not bool(got[blind.unsqueeze(-1).expand_as(got)].any())  # blind rows: all zeros
    if engine.kind == "decoder":
        pad = int((enc["attention_mask"][1] == 0).sum())
        assert pad > 0 and bool(blind[:, 1, :, :pad].all()) and not bool(blind[:, :, :, pad:].any())
    else:
        assert not bool(blind.any())
    keep = (~blind).unsqueeze(-1).expand_as(got)
    np.testing.assert_allclose(got[keep].numpy(), want[keep].numpy(), atol=EXACT, rtol=0)


def test_a_row_that_sees_no_key_is_zeros() -> None:
    """``Recorder.dense`` with ``out`` (the in-place softmax), worked by hand: scores [[0, ln 3], [-inf, -inf]]
    (the second query may see no key) give weights [[1/4, 3/4], [0, 0]]."""
    import math

    from headmap.models import capture

    q = torch.tensor([[[[1.0], [1.0]]]])  # (B=1, H=1, Tq=2, d=1)
    k = torch.tensor([[[[0.0], [math.log(3)]]]])  # (1, 1, Tk=2, 1)
    mask = torch.tensor([[[[True, True], [False, False]]]])  # (1, 1, 2, 2) True: may attend
    raw = capture._Raw(module=None, q=q, k=k, mask=mask, causal=False, scaling=1.0, softcap=None,
                       sliding_window=None, bias=None)  # fmt: skip
    rec = capture.Recorder(calls=[raw])
    got = rec.dense(0, out=torch.empty(1, 1, 2, 2))
    assert torch.allclose(got[0, 0], torch.tensor([[0.25, 0.75], [0.0, 0.0]]), atol=1e-7)
