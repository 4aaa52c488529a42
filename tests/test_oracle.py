"""minilm's attention held against an independent NumPy forward pass of BERT from the safetensors weights.

The oracle shares nothing with the app but the token ids: it reads ``model.safetensors`` with
``safetensors.numpy`` and writes out embeddings, LayerNorm, multi-head attention and the GELU
feed-forward in float64. If the app ran the wrong layers, mixed up heads, dropped the token types,
let padding leak into the softmax or mangled the encoding, these comparisons would fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load_file
from scipy.special import erf

from headmap.models.registry import minilm_path
from headmap.serving.encoding import dequantise
from headmap.settings import Settings

# (text, text_pair): a plain sentence, a sentence pair (token_type_ids 1 on the second segment),
# and a longer one with subwords and punctuation.
CASES = [
    ("The cat sat on the mat because it was tired.", None),
    ("Where is the museum?", "It is next to the old railway station."),
    ("Tokenization splits unbelievably long words; attention heads don't care!", None),
]
IDS = ["sentence", "pair", "subwords"]

LAYERS, HEADS, HIDDEN, EPS = 6, 12, 384, 1e-12


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    """All-MiniLM-L6-v2's tensors as float64, with any ``bert.`` prefix removed."""
    raw = load_file(str(Path(minilm_path(Settings())) / "model.safetensors"))
    return {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items() if v.dtype.kind == "f"}


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased, as torch.nn.LayerNorm
    return (x - mu) / np.sqrt(var + EPS) * gamma + beta


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU that BERT's ``hidden_act="gelu"`` means."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def linear(w: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def bert_attention(
    w: dict[str, np.ndarray], ids: list[int], types: list[int], mask: list[int] | None = None
) -> np.ndarray:
    """Attention weights of every layer and head, (L, H, T, T), for one sequence.

    ``mask`` (T,) marks real tokens with 1; masked keys get -inf before the softmax.
    """
    t = len(ids)
    dh = HIDDEN // HEADS
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:t]
        + w["embeddings.token_type_embeddings.weight"][types]
    )  # (T, E)
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    bias = np.zeros(t) if mask is None else np.where(np.asarray(mask) == 1, 0.0, -np.inf)  # (T,) over keys
    out = []
    for n in range(LAYERS):
        p = f"encoder.layer.{n}"

        def heads(y: np.ndarray) -> np.ndarray:
            return y.reshape(t, HEADS, dh).transpose(1, 0, 2)  # (T, E) -> (H, T, dh)

        q = heads(linear(w, f"{p}.attention.self.query", x))
        k = heads(linear(w, f"{p}.attention.self.key", x))
        v = heads(linear(w, f"{p}.attention.self.value", x))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(dh) + bias  # (H, T, T)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)  # (H, T, T)
        out.append(probs)
        context = (probs @ v).transpose(1, 0, 2).reshape(t, HIDDEN)  # (T, E)
        x = layer_norm(
            x + linear(w, f"{p}.attention.output.dense", context),
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
        )
        hidden = gelu(linear(w, f"{p}.intermediate.dense", x))  # (T, 4E)
        x = layer_norm(
            x + linear(w, f"{p}.output.dense", hidden),
            w[f"{p}.output.LayerNorm.weight"],
            w[f"{p}.output.LayerNorm.bias"],
        )
    return np.stack(out)  # (L, H, T, T)


def oracle_for(registry, weights, text: str, pair: str | None) -> tuple[np.ndarray, list[int]]:  # type: ignore[no-untyped-def]
    enc = registry.get("minilm").encode(text, pair)
    types = enc.token_type_ids if enc.token_type_ids is not None else [0] * len(enc)
    return bert_attention(weights, enc.input_ids, types), enc.input_ids


def test_weights_are_what_the_oracle_expects(weights: dict[str, np.ndarray]) -> None:
    assert weights["embeddings.word_embeddings.weight"].shape == (30522, HIDDEN)
    assert weights["encoder.layer.5.intermediate.dense.weight"].shape == (4 * HIDDEN, HIDDEN)
    assert "encoder.layer.6.attention.self.query.weight" not in weights


@pytest.mark.parametrize(("text", "pair"), CASES, ids=IDS)
def test_engine_forward_matches_numpy(registry, weights, text: str, pair: str | None) -> None:  # type: ignore[no-untyped-def]
    engine = registry.get("minilm")
    enc = engine.encode(text, pair)
    if pair is not None:
        assert enc.token_type_ids is not None and set(enc.token_type_ids) == {0, 1}
    expected, _ = oracle_for(registry, weights, text, pair)
    got = engine.forward([enc])[0].double().numpy()  # (L, H, T, T)
    assert got.shape == expected.shape == (LAYERS, HEADS, len(enc), len(enc))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("text", "pair"), CASES, ids=IDS)
def test_api_json_matches_numpy(client: TestClient, registry, weights, text: str, pair: str | None) -> None:  # type: ignore[no-untyped-def]
    body = client.post("/api/attention", json={"text": text, "text_pair": pair, "model": "minilm"}).json()
    expected, ids = oracle_for(registry, weights, text, pair)
    assert registry.get("minilm").tokenizer.convert_ids_to_tokens(ids) == body["tokens"]
    got = np.array(body["attention"])
    assert got.shape == expected.shape
    # Rounded to 4 decimals (<= 5e-5) on top of float32 arithmetic.
    np.testing.assert_allclose(got, expected, atol=5e-5 + 1e-5, rtol=0)


def test_api_compact_matches_numpy(client: TestClient, registry, weights) -> None:  # type: ignore[no-untyped-def]
    text, pair = CASES[1]
    body = client.post("/api/attention", json={"text": text, "text_pair": pair, "encoding": "compact"}).json()
    expected, _ = oracle_for(registry, weights, text, pair)
    got = dequantise(body["attention_compact"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1 / 510 + 1e-5, rtol=0)


def test_api_subset_matches_numpy(client: TestClient, registry, weights) -> None:  # type: ignore[no-untyped-def]
    text, pair = CASES[0]
    body = client.post("/api/attention", json={"text": text, "layers": [4, 1], "heads": [11, 0, 7]}).json()
    expected, _ = oracle_for(registry, weights, text, pair)
    np.testing.assert_allclose(np.array(body["attention"]), expected[[4, 1]][:, [11, 0, 7]], atol=6e-5, rtol=0)


def test_padding_does_not_leak(registry, weights) -> None:  # type: ignore[no-untyped-def]
    """A short input batched with a long one equals the oracle of the short input alone."""
    engine = registry.get("minilm")
    short, long = engine.encode("Hi there."), engine.encode(CASES[2][0])
    got = engine.forward([long, short])[1].double().numpy()
    expected = bert_attention(weights, short.input_ids, [0] * len(short))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_oracle_masking_agrees_with_cutting(weights) -> None:  # type: ignore[no-untyped-def]
    """Sanity of the oracle itself: padding keys masked to -inf leave real rows as without padding."""
    ids, pad = [101, 7592, 2045, 1012, 102], [0, 0, 0]
    alone = bert_attention(weights, ids, [0] * 5)
    padded = bert_attention(weights, ids + pad, [0] * 8, mask=[1] * 5 + [0] * 3)
    np.testing.assert_allclose(padded[:, :, :5, :5], alone, atol=1e-12)
    assert (padded[:, :, :, 5:] == 0).all()


def test_oracle_is_not_trivially_satisfied(weights) -> None:  # type: ignore[no-untyped-def]
    """Dropping the token types changes the pair's attention by far more than the tolerance."""
    ids = [101, 2073, 2003, 2009, 1029, 102, 2009, 2003, 2182, 1012, 102]
    with_types = bert_attention(weights, ids, [0] * 6 + [1] * 5)
    without = bert_attention(weights, ids, [0] * 11)
    assert np.abs(with_types - without).max() > 1e-3
