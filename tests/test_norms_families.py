"""Norm-based attention (Kobayashi et al. 2020) on the captured LLM families, with grouped-query attention.

Tiny random Llama, Qwen2 (value bias), Mistral (sliding window), Gemma 2 (soft-capping) and Phi-3 (fused
qkv_proj) models are served on the capture path; the reference is each folder loaded independently with
``attn_implementation="eager"``: its ``output_attentions`` times ‖(x W_V^g + b_V^g) W_O^h‖ computed here from
the layer's own weights, x the attention's input (the layer's input after ``input_layernorm``) and g = h //
(H / H_kv) the value head of query head h. GPT-2 (Conv1D projections) is not supported: 422 naming what is.
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
from headmap.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import LLM_HEADS, LLM_KV_HEADS, LLM_MAKERS, MAKERS

FAMILIES = ["llama", "qwen2", "mistral", "gemma2", "phi3"]
TEXT = "The cat sat on the mat because it was tired. Where is it?"
#: JSON values are rounded to 4 decimals on top of float32 arithmetic; the norms are O(1) here.
ATOL = 2e-4


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("norm-families")
    out = {family: LLM_MAKERS[family](root / family) for family in FAMILIES}
    out["gpt2"] = MAKERS["gpt2"](root / "gpt2")
    return out


@pytest.fixture(scope="module")
def client(paths: dict[str, Path]) -> Iterator[TestClient]:
    models = ",".join(f"{family}={path}" for family, path in paths.items())
    app = create_app(Settings(builtin_models="", models=models, default_model="llama"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def reference_norms(path: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-head (L, H, T, T) and per-layer (L, T, T) norms from the eager model and its weights, in float64."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = tok(text, return_tensors="pt")
    enc.pop("token_type_ids", None)
    inputs: list[torch.Tensor] = []

    def keep_input(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs.append(args[0] if args else kwargs["hidden_states"])  # (1, T, D) the decoder layer's input

    hooks = [layer.register_forward_pre_hook(keep_input, with_kwargs=True) for layer in model.layers]
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    for h in hooks:
        h.remove()
    heads, kv = model.config.num_attention_heads, model.config.num_key_value_heads
    per_head, per_layer = [], []
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            fx, a = _layer_vectors(layer, inputs[index], out.attentions[index], heads, kv)
            vec = a[:, :, :, None] * fx[:, None, :, :]  # (H, T, T, D): α^h_ij f_h(x_j)
            per_head.append(vec.norm(dim=-1).numpy())
            per_layer.append(vec.sum(0).norm(dim=-1).numpy())
    return np.stack(per_head), np.stack(per_layer)


def _layer_vectors(
    layer: Any, hidden: torch.Tensor, attentions: torch.Tensor, heads: int, kv: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """f_h(x_j) for every query head (H, T, D) and the eager weights (H, T, T) of one layer, float64."""
    att = layer.self_attn
    d = att.head_dim
    x = layer.input_layernorm(hidden)[0].double()  # (T, D) the attention's input
    if hasattr(att, "v_proj"):
        wv = att.v_proj.weight.double()  # (Hkv*d, D)
        bv = att.v_proj.bias.double() if att.v_proj.bias is not None else torch.zeros(kv * d, dtype=torch.float64)
    else:  # Phi-3: rows of qkv_proj are q (H*d), k (Hkv*d), v (Hkv*d)
        wv = att.qkv_proj.weight.double()[(heads + kv) * d :]
        bv = torch.zeros(kv * d, dtype=torch.float64)
    wo = att.o_proj.weight.double()  # (D, H*d)
    v = x @ wv.T + bv  # (T, Hkv*d)
    a = attentions[0].double()  # (H, T, T)
    f = []
    for h in range(heads):
        g = h // (heads // kv)  # repeat_kv: query head h reads key/value head g
        f.append(v[:, g * d : (g + 1) * d] @ wo[:, h * d : (h + 1) * d].T)  # (T, D)
    return torch.stack(f), a  # (H, T, D), (H, T, T)


@pytest.mark.parametrize("family", FAMILIES)
def test_norms_equal_eager_reference(client: TestClient, paths: dict[str, Path], family: str) -> None:
    r = client.post("/api/attention", json={"text": TEXT, "model": family, "measure": "norms"})
    assert r.status_code == 200, r.text
    data = r.json()
    expected_heads, expected_layers = reference_norms(paths[family], TEXT)
    got = np.array(data["attention"])
    assert got.shape == expected_heads.shape
    assert got.shape[1] == LLM_HEADS and LLM_KV_HEADS < LLM_HEADS  # grouped-query attention is exercised
    np.testing.assert_allclose(got, expected_heads, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.array(data["layer_norms"]), expected_layers, atol=ATOL, rtol=0)


def test_norms_head_subset(client: TestClient) -> None:
    full = client.post("/api/attention", json={"text": TEXT, "model": "qwen2", "measure": "norms"}).json()
    part = client.post(
        "/api/attention", json={"text": TEXT, "model": "qwen2", "measure": "norms", "layers": [1], "heads": [3, 0]}
    ).json()
    np.testing.assert_allclose(np.array(part["attention"]), np.array(full["attention"])[[1]][:, [3, 0]], atol=1e-6)


def test_unsupported_family_is_422_naming_what_is(client: TestClient) -> None:
    r = client.post("/api/attention", json={"text": TEXT, "model": "gpt2", "measure": "norms"})
    assert r.status_code == 422
    body: dict[str, Any] = r.json()
    assert body["error"] == "measure_unsupported"
    assert "BERT-style encoders" in body["detail"] and "llama" in body["detail"]
    r = client.post("/api/aggregate", json={"text": TEXT, "model": "llama", "methods": ["alti"]})
    assert r.status_code == 422 and r.json()["error"] == "measure_unsupported"  # ALTI: post-LN blocks only
