"""The insight API (`/api/stats`, `/api/aggregate`, `/api/compare`, `/api/explain`) through the session client.

Expected numbers are recomputed here with NumPy from the engine's unrounded weights or from
`/api/attention`, never by calling ``app.analysis``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from headmap.schemas.insight import (
    AggregateResponse,
    CompareResponse,
    ExplainResponse,
    StatsResponse,
)

TEXT = "The cat sat on the mat because it was tired."
ROUND = 5e-5  # 4-decimal rounding of the responses


def attention(client: TestClient, **body: object) -> np.ndarray:
    r = client.post("/api/attention", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json()["attention"], dtype=np.float64)


@pytest.fixture(scope="module")
def exact(registry) -> np.ndarray:  # type: ignore[no-untyped-def]
    """minilm's unrounded weights for TEXT, (L, H, T, T) float64."""
    engine = registry.get("minilm")
    return engine.forward([engine.encode(TEXT)])[0].double().numpy()


# -- /api/stats ------------------------------------------------------------------------------------


def test_stats_match_numpy(client: TestClient, exact: np.ndarray) -> None:
    r = client.post("/api/stats", json={"text": TEXT})
    assert r.status_code == 200, r.text
    body = StatsResponse.model_validate(r.json())
    t = len(body.tokens)
    assert body.tokens[0] == "[CLS]" and body.tokens[-1] == "[SEP]"
    assert body.cls_positions == [0] and body.sep_positions == [t - 1]
    assert body.layers == list(range(6)) and body.heads == list(range(12))

    w = exact  # (6, 12, T, T)
    q = np.arange(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(w > 0, w * np.log(w), 0.0)
    expected = {
        "entropy": -plogp.sum(-1).mean(-1),
        "distance": (w * np.abs(q[:, None] - q[None, :])).sum(-1).mean(-1),
        "max_weight": w.max(axis=(-2, -1)),
        "row_max": w.max(-1).mean(-1),
        "to_cls": w[..., 0].mean(-1),
        "to_sep": w[..., t - 1].mean(-1),
        "to_self": np.stack([w[..., i, i] for i in range(t)], -1).mean(-1),
        "to_previous": np.stack([w[..., i, i - 1] for i in range(1, t)], -1).mean(-1),
        "to_next": np.stack([w[..., i, i + 1] for i in range(t - 1)], -1).mean(-1),
        "to_first": np.stack([w[..., i, 0] for i in range(t)], -1).mean(-1),
    }
    for name, want in expected.items():
        got = np.array(getattr(body.stats, name))
        assert got.shape == (6, 12), name
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
    # minilm's layer 0 head 2 is a previous-token head: a sanity check that the axes are not swapped.
    assert body.stats.to_previous is not None and body.stats.to_previous[0][2] > 0.9


def test_stats_subset_keeps_order(client: TestClient) -> None:
    full = client.post("/api/stats", json={"text": TEXT}).json()["stats"]
    sub = client.post("/api/stats", json={"text": TEXT, "layers": [5, 0], "heads": [3]}).json()
    assert sub["layers"] == [5, 0] and sub["heads"] == [3]
    for name, matrix in sub["stats"].items():
        assert matrix == [[full[name][5][3]], [full[name][0][3]]], name


def test_stats_pair_has_two_seps(client: TestClient) -> None:
    body = client.post("/api/stats", json={"text": "A cat.", "text_pair": "A dog."}).json()
    seps = [i for i, tok in enumerate(body["tokens"]) if tok == "[SEP]"]
    assert len(seps) == 2 and body["sep_positions"] == seps


def test_stats_custom_has_one_layer(client: TestClient) -> None:
    body = client.post("/api/stats", json={"text": TEXT, "model": "custom"}).json()
    assert body["kind"] == "custom" and body["layers"] == [0]
    assert np.array(body["stats"]["entropy"]).shape == (1, 12)


# -- /api/aggregate --------------------------------------------------------------------------------


def test_aggregate_mean_max_rollout(client: TestClient, exact: np.ndarray) -> None:
    r = client.post("/api/aggregate", json={"text": TEXT})
    assert r.status_code == 200, r.text
    body = AggregateResponse.model_validate(r.json())
    assert body.mean is not None and body.max is not None and body.rollout is not None
    np.testing.assert_allclose(np.array(body.mean), exact.mean(1), atol=ROUND + 1e-6)
    np.testing.assert_allclose(np.array(body.max), exact.max(1), atol=ROUND + 1e-6)
    t = exact.shape[-1]
    acc = np.eye(t)
    for layer in range(6):
        a_hat = 0.5 * exact[layer].mean(0) + 0.5 * np.eye(t)
        a_hat /= a_hat.sum(1, keepdims=True)
        acc = a_hat @ acc
        np.testing.assert_allclose(np.array(body.rollout[layer]), acc, atol=ROUND + 1e-6, err_msg=f"layer {layer}")


def test_aggregate_subset(client: TestClient, exact: np.ndarray) -> None:
    full = client.post("/api/aggregate", json={"text": TEXT}).json()
    body = client.post("/api/aggregate", json={"text": TEXT, "layers": [5], "methods": ["rollout"]}).json()
    assert body["mean"] is None and body["max"] is None
    assert body["rollout"] == [full["rollout"][5]]  # still the product over layers 0..5
    heads = client.post("/api/aggregate", json={"text": TEXT, "layers": [1], "heads": [0, 4], "methods": ["mean"]})
    np.testing.assert_allclose(np.array(heads.json()["mean"][0]), exact[1, [0, 4]].mean(0), atol=ROUND + 1e-6)


def test_openapi_documents_the_formula(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/stats", "/api/aggregate", "/api/compare", "/api/explain"):
        assert "post" in spec["paths"][path], path
    rollout = spec["components"]["schemas"]["AggregateResponse"]["properties"]["rollout"]["description"]
    assert "0.5·mean_h(A_l) + 0.5·I" in rollout and "Â_l · Â_{l−1} ··· Â_0" in rollout
    entropy = spec["components"]["schemas"]["HeadStatistics"]["properties"]["entropy"]["description"]
    assert "nats" in entropy


# -- /api/compare ----------------------------------------------------------------------------------


def test_compare_two_models_diff_is_a_minus_b(client: TestClient) -> None:
    body = {"a": {"text": TEXT, "model": "minilm"}, "b": {"text": TEXT, "model": "custom"}}
    r = client.post("/api/compare", json=body)
    assert r.status_code == 200, r.text
    res = CompareResponse.model_validate(r.json())
    assert res.aligned and res.reason is None and res.mismatched_positions == []
    assert res.layers == [0] and res.heads == list(range(12))  # what both models have
    a, b = np.array(res.a.attention), np.array(res.b.attention)
    assert res.diff is not None
    diff = np.array(res.diff)
    assert a.shape == b.shape == diff.shape == (1, 12, len(res.a.tokens), len(res.a.tokens))
    np.testing.assert_allclose(diff, a - b, atol=2 * ROUND + 1e-6)
    # separate forward passes may batch differently, which can move the 4th decimal by one
    np.testing.assert_allclose(a, attention(client, text=TEXT, layers=[0]), atol=1.1e-4)
    np.testing.assert_allclose(b, attention(client, text=TEXT, model="custom"), atol=1.1e-4)


def test_compare_minimal_pair(client: TestClient) -> None:
    body = {"a": {"text": "The doctor said he was tired."}, "b": {"text": "The doctor said she was tired."}}
    res = client.post("/api/compare", json={**body, "layers": [2, 4], "heads": [1]}).json()
    assert res["aligned"] is True
    assert res["mismatched_positions"] == [4] and res["a"]["tokens"][4] == "he" and res["b"]["tokens"][4] == "she"
    a = attention(client, text=body["a"]["text"], layers=[2, 4], heads=[1])
    b = attention(client, text=body["b"]["text"], layers=[2, 4], heads=[1])
    np.testing.assert_allclose(np.array(res["diff"]), a - b, atol=2e-4)  # separate passes: see above
    assert np.abs(np.array(res["diff"])).max() > 0.01  # the swap really changes the weights


def test_compare_masked_token_aligns_with_the_word_it_hides(client: TestClient) -> None:
    """The perturbation's "mask": [MASK] typed in place of a word lines up with it (same model)."""
    body = {"a": {"text": "The doctor said he was tired."}, "b": {"text": "The doctor said [MASK] was tired."}}
    res = client.post("/api/compare", json={**body, "layers": [1], "heads": [3]}).json()
    assert res["aligned"] is True and res["mismatched_positions"] == [4]
    assert res["b"]["tokens"][4] == "[MASK]" and res["b"]["special"][4] is True
    a = attention(client, text=body["a"]["text"], layers=[1], heads=[3])
    b = attention(client, text=body["b"]["text"], layers=[1], heads=[3])
    np.testing.assert_allclose(np.array(res["diff"]), a - b, atol=2e-4)  # separate passes: see above
    # [CLS]/[SEP] still have to line up: a mask never stands in for them
    moved = client.post("/api/compare", json={"a": {"text": "a b c d"}, "b": {"text": "a b", "text_pair": "c"}})
    assert moved.json()["aligned"] is False


def test_compare_aggregate_view(client: TestClient) -> None:
    body = {"a": {"text": TEXT}, "b": {"text": TEXT.replace("cat", "dog")}, "view": "rollout", "layers": [5]}
    res = client.post("/api/compare", json=body).json()
    assert res["aligned"] and np.array(res["diff"]).shape[:2] == (1, 1)
    agg = client.post("/api/aggregate", json={"text": TEXT, "layers": [5], "methods": ["rollout"]}).json()
    np.testing.assert_allclose(res["a"]["attention"][0][0], agg["rollout"][0], atol=1.1e-4)


def test_compare_misaligned_says_so(client: TestClient) -> None:
    r = client.post("/api/compare", json={"a": {"text": TEXT}, "b": {"text": "A much shorter one."}})
    assert r.status_code == 200
    res = CompareResponse.model_validate(r.json())
    assert res.aligned is False and res.diff is None
    assert res.reason is not None and "tokens" in res.reason and str(len(res.a.tokens)) in res.reason
    # both sides still come back, each on its own tokens, to show side by side
    assert np.array(res.a.attention).shape[-1] == len(res.a.tokens)
    assert np.array(res.b.attention).shape[-1] == len(res.b.tokens) != len(res.a.tokens)


def test_compare_pair_layout_mismatch(client: TestClient) -> None:
    # same token count, but the [SEP] sits elsewhere: positions do not correspond
    r = client.post("/api/compare", json={"a": {"text": "a b c d"}, "b": {"text": "a b", "text_pair": "c"}})
    res = r.json()
    assert r.status_code == 200 and len(res["a"]["tokens"]) == len(res["b"]["tokens"])
    assert res["aligned"] is False and "special tokens" in res["reason"] and res["diff"] is None


# -- /api/explain ----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", [0, 7])
def test_explain_softmax_equals_attention(client: TestClient, head: int) -> None:
    text = "The cat sat on the mat."
    r = client.post("/api/explain", json={"text": text, "head": head})
    assert r.status_code == 200, r.text
    res = ExplainResponse.model_validate(r.json())
    assert [s.key for s in res.steps] == [
        "embeddings", "qkv", "scores", "weights", "weighted_sum", "residual_norm", "output"
    ]  # fmt: skip
    assert [s.step for s in res.steps] == list(range(1, 8))
    steps = {s.key: s for s in res.steps}
    weights = np.array(steps["weights"].matrices[0].values)
    api = attention(client, text=text, model="custom", heads=[head])[0, 0]  # (T, T)
    np.testing.assert_allclose(weights, api, atol=1e-4)


def test_explain_steps_are_consistent(client: TestClient) -> None:
    res = ExplainResponse.model_validate(
        client.post("/api/explain", json={"text": "Dogs bark loudly.", "head": 3}).json()
    )
    t, e, hd = len(res.tokens), res.embed_size, res.head_size
    assert (res.head, res.num_heads, e, hd) == (3, 12, 384, 32)
    m = {mat.name: np.array(mat.values) for s in res.steps for mat in s.matrices}
    shapes = {s.key: [mat.shape for mat in s.matrices] for s in res.steps}
    assert shapes == {
        "embeddings": [[t, e]],
        "qkv": [[t, hd]] * 3,
        "scores": [[t, t]],
        "weights": [[t, t]],
        "weighted_sum": [[t, hd]],
        "residual_norm": [[t, e]] * 3,
        "output": [[t, e]],
    }
    for name, values in m.items():
        assert list(values.shape) == next(mat.shape for s in res.steps for mat in s.matrices if mat.name == name)
    params = {p.name: p.shape for s in res.steps for p in s.parameters}
    assert params["W_q"] == params["W_k"] == params["W_v"] == [e, hd]
    # The textbook relations hold on the returned numbers (within their 4-decimal rounding).
    np.testing.assert_allclose(m["S"], m["Q"] @ m["K"].T / math.sqrt(hd), atol=5e-3)
    soft = np.exp(m["S"] - m["S"].max(1, keepdims=True))
    np.testing.assert_allclose(m["A"], soft / soft.sum(1, keepdims=True), atol=1e-3)
    np.testing.assert_allclose(m["Z"], m["A"] @ m["V"], atol=2e-3)
    np.testing.assert_allclose(m["X + C"], m["X"] + m["C"], atol=2e-4)
    normed = (m["X + C"] - m["X + C"].mean(1, keepdims=True)) / m["X + C"].std(1, keepdims=True)
    # N = γ·normed + β: per feature an affine map of the normalised residual, the same for every token
    for j in range(0, e, 97):
        slope, icept = np.polyfit(normed[:, j], m["N"][:, j], 1)
        np.testing.assert_allclose(m["N"][:, j], slope * normed[:, j] + icept, atol=2e-3)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "error", "detail"),
    [
        ("/api/stats", {"text": TEXT, "model": "nope"}, 404, "model_not_found", "nope"),
        ("/api/aggregate", {"text": TEXT, "model": "nope"}, 404, "model_not_found", "nope"),
        ("/api/explain", {"text": TEXT, "model": "nope"}, 404, "model_not_found", "nope"),
        ("/api/compare", {"a": {"text": TEXT}, "b": {"text": TEXT, "model": "nope"}}, 404, "model_not_found", "b: "),
        ("/api/explain", {"text": TEXT, "model": "minilm"}, 422, "not_custom", "kind encoder"),
        ("/api/explain", {"text": TEXT, "head": 12}, 422, "head_out_of_range", "0..11"),
        ("/api/explain", {"text": TEXT, "head": -1}, 422, "head_out_of_range", "0..11"),
        ("/api/stats", {"text": TEXT, "heads": [99]}, 422, "head_out_of_range", "0..11"),
        ("/api/aggregate", {"text": TEXT, "layers": [6]}, 422, "layer_out_of_range", "0..5"),
        ("/api/compare", {"a": {"text": TEXT}, "b": {"text": TEXT, "model": "custom"}, "layers": [3]}, 422,
         "layer_out_of_range", "b: layer 3"),
        ("/api/stats", {"text": "   "}, 422, "empty_text", "empty"),
        ("/api/aggregate", {"text": ""}, 422, "empty_text", "empty"),
        ("/api/explain", {"text": " \n"}, 422, "empty_text", "empty"),
        ("/api/compare", {"a": {"text": TEXT}, "b": {"text": ""}}, 422, "empty_text", "b: "),
        ("/api/stats", {"text": TEXT, "encoding": "compact"}, 422, "invalid_request", "encoding"),
        ("/api/aggregate", {"text": TEXT, "methods": []}, 422, "invalid_request", "methods"),
        ("/api/aggregate", {"text": TEXT, "methods": ["median"]}, 422, "invalid_request", "methods"),
        ("/api/compare", {"a": {"text": TEXT}}, 422, "invalid_request", "b"),
        ("/api/compare", {"a": {"text": TEXT}, "b": {"text": TEXT}, "view": "sum"}, 422, "invalid_request", "view"),
    ],
)  # fmt: skip
def test_errors(client: TestClient, path: str, body: dict[str, object], status: int, error: str, detail: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert detail in r.json()["detail"]
    assert set(r.json()) == {"error", "detail"}


def test_too_long_is_413(client: TestClient) -> None:
    long = "word " * 600
    r = client.post("/api/stats", json={"text": long})
    assert r.status_code == 413 and r.json()["error"] == "too_many_tokens"
    r = client.post("/api/stats", json={"text": long, "truncate": True, "layers": [0], "heads": [0]})
    assert r.status_code == 200 and r.json()["truncated"] is True
