"""The custom ``SelfAttention`` block: equal to minilm's layer 0, its trace, and its other initialisations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from headmap.models.custom import CustomEngine, make_custom
from headmap.models.hf import HFEngine
from headmap.models.registry import ModelRegistry
from headmap.models.textbook import SelfAttention, init_random
from headmap.settings import Settings

TEXTS = ["The cat sat on the mat because it was tired.", "Attention is all you need, they said."]


def minilm_and_custom(registry) -> tuple[HFEngine, CustomEngine]:  # type: ignore[no-untyped-def]
    minilm, custom = registry.get("minilm"), registry.get("custom")
    assert isinstance(minilm, HFEngine) and isinstance(custom, CustomEngine)
    return minilm, custom


def embedded(custom: CustomEngine, text: str) -> tuple[torch.Tensor, int]:
    enc = custom.encode(text)
    ids = torch.tensor([enc.input_ids])
    with torch.inference_mode():
        return custom.embed(ids, torch.zeros_like(ids)), len(enc)  # (1, T, E)


# -- equality with minilm's layer 0 ---------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_custom_heads_equal_minilm_layer0_engines(registry, text: str) -> None:  # type: ignore[no-untyped-def]
    minilm, custom = minilm_and_custom(registry)
    assert (custom.num_layers, custom.num_heads) == (1, minilm.num_heads) == (1, 12)
    ours = custom.forward([custom.encode(text)])[0]  # (1, 12, T, T)
    theirs = minilm.forward([minilm.encode(text)])[0]  # (6, 12, T, T)
    assert ours.shape == (1, *theirs.shape[1:])
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-6, rtol=0)
    # Not just equal to *some* layer: layer 1 is clearly different.
    assert (ours[0] - theirs[1]).abs().max() > 1e-2


def test_custom_heads_equal_minilm_layer0_api(client: TestClient) -> None:
    for text in TEXTS:
        a = client.post("/api/attention", json={"text": text, "model": "custom"}).json()
        b = client.post("/api/attention", json={"text": text, "model": "minilm", "layers": [0]}).json()
        assert a["kind"] == "custom" and a["layers"] == [0] and a["heads"] == list(range(12))
        assert a["tokens"] == b["tokens"] and a["offsets"] == b["offsets"] and a["special"] == b["special"]
        np.testing.assert_allclose(np.array(a["attention"]), np.array(b["attention"]), atol=1.01e-4, rtol=0)


def test_custom_pair_equals_minilm_layer0(registry) -> None:  # type: ignore[no-untyped-def]
    """Token types reach the custom block's embeddings too."""
    minilm, custom = minilm_and_custom(registry)
    a = custom.forward([custom.encode("Where is it?", "It is here.")])[0]
    b = minilm.forward([minilm.encode("Where is it?", "It is here.")])[0]
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)


# -- the trace and an independent einsum ----------------------------------------------------------


def test_trace_reproduces_multihead_attention(registry) -> None:  # type: ignore[no-untyped-def]
    _, custom = minilm_and_custom(registry)
    block = custom.block
    assert block is not None
    x, t = embedded(custom, TEXTS[0])
    with torch.inference_mode():
        out, weights = block(x)  # (1, T, E), (1, nh, T, T)
        tr = block.trace(x)
    nh, hd = block.num_heads, block.embed_size // block.num_heads
    assert tr.q.shape == tr.k.shape == tr.v.shape == (1, nh, t, hd)
    assert tr.scores.shape == tr.weights.shape == (1, nh, t, t)
    torch.testing.assert_close(tr.weights, weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(tr.scores.softmax(-1), tr.weights, atol=0, rtol=0)
    torch.testing.assert_close(tr.output, out, atol=1e-5, rtol=0)
    torch.testing.assert_close(tr.residual, x + tr.context, atol=0, rtol=0)


def test_own_einsum_reproduces_multihead_attention(registry) -> None:  # type: ignore[no-untyped-def]
    """Q/K/V from the block's raw parameters with our own arithmetic, in float64."""
    _, custom = minilm_and_custom(registry)
    block = custom.block
    assert block is not None
    x, t = embedded(custom, TEXTS[1])
    with torch.inference_mode():
        _, weights = block(x)
        tr = block.trace(x)
    e, nh = block.embed_size, block.num_heads
    hd = e // nh
    w_in = block.attention.in_proj_weight.detach().double().numpy()  # (3E, E): rows q, k, v
    b_in = block.attention.in_proj_bias.detach().double().numpy()  # (3E,)
    xs = x[0].double().numpy()  # (T, E)
    qkv = np.einsum("te,fe->tf", xs, w_in) + b_in  # (T, 3E)
    q, k, v = (qkv[:, i * e : (i + 1) * e].reshape(t, nh, hd) for i in range(3))  # each (T, nh, hd)
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)  # (nh, T, T)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, weights[0].double().numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(q.transpose(1, 0, 2), tr.q[0].double().numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(v.transpose(1, 0, 2), tr.v[0].double().numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(scores, tr.scores[0].double().numpy(), atol=1e-4, rtol=1e-5)


def test_rows_sum_to_one(registry) -> None:  # type: ignore[no-untyped-def]
    _, custom = minilm_and_custom(registry)
    attn = custom.forward([custom.encode(t) for t in TEXTS])
    for a in attn:
        np.testing.assert_allclose(a.sum(-1).numpy(), 1.0, atol=1e-4)
        assert (a >= 0).all()


def test_padding_mask(registry) -> None:  # type: ignore[no-untyped-def]
    """Padded keys get exactly zero weight and real rows equal the unpadded run, in the block and the trace."""
    _, custom = minilm_and_custom(registry)
    block = custom.block
    assert block is not None
    x, t = embedded(custom, TEXTS[0])
    pad = 5
    junk = torch.randn(1, pad, block.embed_size, generator=torch.Generator().manual_seed(0))
    xp = torch.cat([x, junk], dim=1)  # (1, T + pad, E)
    mask = torch.zeros(1, t + pad, dtype=torch.bool)
    mask[0, t:] = True  # True = padding
    with torch.inference_mode():
        _, alone = block(x)
        _, padded = block(xp, key_padding_mask=mask)
        tr = block.trace(xp, key_padding_mask=mask)
    assert (padded[..., t:] == 0).all() and (tr.weights[..., t:] == 0).all()
    torch.testing.assert_close(padded[..., :t, :t], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(tr.weights, padded, atol=1e-6, rtol=0)
    # Without the mask the junk would take weight.
    with torch.inference_mode():
        _, unmasked = block(xp)
    assert unmasked[..., :t, t:].sum() > 1e-3


def test_block_rejects_wrong_shapes() -> None:
    block = SelfAttention(16, 4)
    with pytest.raises(ValueError, match="expected input"):
        block(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 4)


# -- other initialisations ------------------------------------------------------------------------


def test_random_init_is_reproducible_and_differs_from_minilm(registry) -> None:  # type: ignore[no-untyped-def]
    minilm, custom = minilm_and_custom(registry)
    a = make_custom("r1", minilm, "random", seed=7)
    b = make_custom("r2", minilm, "random", seed=7)
    c = make_custom("r3", minilm, "random", seed=8)
    assert a.block is not None and b.block is not None and c.block is not None
    for (name, pa), pb in zip(a.block.state_dict().items(), b.block.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.block.attention.in_proj_weight, c.block.attention.in_proj_weight)
    enc = custom.encode(TEXTS[0])
    wa, wb, wc = a.forward([enc])[0], b.forward([enc])[0], c.forward([enc])[0]
    assert torch.equal(wa, wb)
    assert (wa - wc).abs().max() > 1e-3
    assert (wa - custom.forward([enc])[0]).abs().max() > 1e-2
    np.testing.assert_allclose(wa.sum(-1).numpy(), 1.0, atol=1e-4)
    # A seed means the same numbers on every machine: the generator, not the global RNG state.
    torch.manual_seed(12345)
    fresh = SelfAttention(a.block.embed_size, a.block.num_heads)
    init_random(fresh, 7)
    assert torch.equal(fresh.attention.in_proj_weight, a.block.attention.in_proj_weight)


def test_checkpoint_round_trip(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A saved state_dict, loaded through settings, gives back the same block and the same attention."""
    minilm, custom = minilm_and_custom(registry)
    source = make_custom("src", minilm, "random", seed=3)
    assert source.block is not None
    path = tmp_path / "block.pt"
    torch.save(source.block.state_dict(), path)

    reg = ModelRegistry(
        Settings(custom_init="checkpoint", custom_checkpoint=path, builtin_models="custom", default_model="custom")
    )
    reg.load_all()
    assert reg.failed == {} and list(reg.engines) == ["custom"]
    loaded = reg.get("custom")
    assert isinstance(loaded, CustomEngine) and loaded.block is not None
    for (name, pa), pb in zip(source.block.state_dict().items(), loaded.block.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert str(path.name) in loaded.description
    enc = custom.encode(TEXTS[1])
    assert torch.equal(loaded.forward([enc])[0], source.forward([enc])[0])


def test_checkpoint_missing_is_a_load_failure(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    reg = ModelRegistry(
        Settings(custom_init="checkpoint", custom_checkpoint=missing, builtin_models="custom", warmup=False)
    )
    reg.load_all()
    assert "custom" in reg.failed and "custom" not in reg.engines
