"""The REST contract of issue 2, through TestClient with the real minilm and custom models."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from headmap.serving.encoding import dequantise

TEXT = "The cat sat on the mat because it was tired."


def post(client: TestClient, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/api/attention", json=body)


def test_attention_contract(client: TestClient) -> None:
    r = post(client, text=TEXT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    t = len(body["tokens"])
    assert body["model"] == "minilm" and body["kind"] == "encoder"
    assert body["tokens"][0] == "[CLS]" and body["tokens"][-1] == "[SEP]"
    assert body["special"] == [tok in ("[CLS]", "[SEP]") for tok in body["tokens"]]
    assert body["layers"] == list(range(6)) and body["heads"] == list(range(12))
    assert body["truncated"] is False and body["attention_compact"] is None
    attn = np.array(body["attention"])
    assert attn.shape == (6, 12, t, t)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-3)  # 4-decimal rounding of up to T terms
    assert (attn >= 0).all()
    for tok, off, special in zip(body["tokens"], body["offsets"], body["special"], strict=True):
        if special:
            assert off is None
        else:
            assert TEXT[off[0] : off[1]].lower() == tok.removeprefix("##")


def test_rows_sum_to_one_unrounded(registry) -> None:  # type: ignore[no-untyped-def]
    engine = registry.get("minilm")
    attn = engine.forward([engine.encode(TEXT)])[0]  # (L, H, T, T)
    np.testing.assert_allclose(attn.sum(-1).numpy(), 1.0, atol=1e-4)


def test_subset_and_order(client: TestClient) -> None:
    full = np.array(post(client, text=TEXT).json()["attention"])
    body = post(client, text=TEXT, layers=[5, 0], heads=[3]).json()
    assert body["layers"] == [5, 0] and body["heads"] == [3]
    np.testing.assert_array_equal(np.array(body["attention"]), full[[5, 0]][:, [3]])


def test_deterministic(client: TestClient) -> None:
    a = post(client, text=TEXT, model="custom").content
    b = post(client, text=TEXT, model="custom").content
    assert a == b


def test_compact_encoding_matches_json(client: TestClient) -> None:
    exact = np.array(post(client, text=TEXT).json()["attention"])
    body = post(client, text=TEXT, encoding="compact").json()
    assert body["attention"] is None
    comp = body["attention_compact"]
    assert comp["dtype"] == "uint8" and comp["shape"] == list(exact.shape)
    np.testing.assert_allclose(dequantise(comp), exact, atol=1 / 510 + 1e-4)


def test_text_pair_segments(client: TestClient) -> None:
    body = post(client, text="Where is it?", text_pair="It is here.").json()
    toks, seg = body["tokens"], body["segments"]
    assert toks.count("[SEP]") == 2
    first_sep = toks.index("[SEP]")
    assert set(seg[: first_sep + 1]) == {0} and set(seg[first_sep + 1 :]) == {1}
    # Offsets of segment-1 tokens index into text_pair.
    for tok, off, s in zip(toks, body["offsets"], seg, strict=True):
        if off is not None and s == 1:
            assert "It is here."[off[0] : off[1]].lower() == tok


def test_truncate(client: TestClient) -> None:
    long = "word " * 700
    r = post(client, text=long)
    assert r.status_code == 413 and r.json()["error"] == "too_many_tokens"
    body = post(client, text=long, truncate=True, layers=[0], heads=[0]).json()
    assert body["truncated"] is True and len(body["tokens"]) == 512
    assert body["tokens"][-1] == "[SEP]"


def test_special_token_typed_in_text_is_flagged_with_offsets(client: TestClient) -> None:
    text = "a [SEP] b"
    body = post(client, text=text).json()
    i = body["tokens"].index("[SEP]")
    assert body["special"][i] is True
    assert text[slice(*body["offsets"][i])] == "[SEP]"
    assert body["offsets"][0] is None and body["offsets"][-1] is None


def test_unknown_token_flagged(client: TestClient) -> None:
    body = post(client, text="hello \u2603\ufe0f world").json()
    assert any(body["unknown"])
    assert all(tok == "[UNK]" for tok, unk in zip(body["tokens"], body["unknown"], strict=True) if unk)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"text": ""}, 422, "empty_text"),
        ({"text": " \n\t "}, 422, "empty_text"),
        ({"text": "x", "text_pair": "  "}, 422, "empty_text"),
        ({"text": "x", "model": "nope"}, 404, "model_not_found"),
        ({"text": "x", "model": "../../etc/passwd"}, 404, "model_not_found"),
        ({"text": "x", "model": "/etc/passwd"}, 404, "model_not_found"),
        ({"text": "x", "layers": [6]}, 422, "layer_out_of_range"),
        ({"text": "x", "layers": [-1]}, 422, "layer_out_of_range"),
        ({"text": "x", "layers": []}, 422, "layer_out_of_range"),
        ({"text": "x", "heads": [12]}, 422, "head_out_of_range"),
        ({"text": "x", "model": "custom", "layers": [1]}, 422, "layer_out_of_range"),
        ({"text": 5}, 422, "invalid_request"),
        ({"text": "x", "layers": "0"}, 422, "invalid_request"),
        ({"text": "x", "layers": [0.5]}, 422, "invalid_request"),
        ({"text": "x", "truncate": "maybe"}, 422, "invalid_request"),
        ({"text": "x", "encoding": "xml"}, 422, "invalid_request"),
        ({"text": "x", "surprise": 1}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ([], 422, "invalid_request"),
    ],
)
def test_errors(client: TestClient, body: object, status: int, error: str) -> None:
    r = client.post("/api/attention", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_unknown_model_lists_available(client: TestClient) -> None:
    detail = post(client, text="x", model="nope").json()["detail"]
    assert "minilm" in detail and "custom" in detail


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (b"{bad", 400, "invalid_json"),  # not JSON
        (b'{"text": "x"', 400, "invalid_json"),  # cut short
        (b'{"text": "x"} trailing', 400, "invalid_json"),  # JSON followed by junk
        (b"\xff\xfe", 400, "invalid_json"),  # not UTF-8
        (b"", 422, "invalid_request"),  # no body at all: the required body is missing, nothing is malformed
        (b'"just a string"', 422, "invalid_request"),  # valid JSON of the wrong shape
    ],
)
def test_malformed_json(client: TestClient, raw: bytes, status: int, error: str) -> None:
    r = client.post("/api/attention", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail"} and r.json()["error"] == error


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/api/attention")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_models(client: TestClient) -> None:
    body = client.get("/api/models").json()
    assert body["default"] == "minilm"
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["minilm"] | {"description": ""} == {
        "name": "minilm",
        "kind": "encoder",
        "family": "bert",
        "num_layers": 6,
        "num_heads": 12,
        "num_kv_heads": 12,
        "head_dim": 32,  # 384 hidden / 12 heads
        "dtype": "float32",
        # The safetensors header's 22,713,728 numbers less the 512 of the position-id buffer (not a parameter).
        "num_parameters": 22_713_216,
        "can_predict": False,  # saved as BertModel: no masked-LM head
        "source": "built-in",
        "max_tokens": 512,
        "description": "",
        "supports_pair": True,
        "decoder_layers": None,  # an encoder: no decoder
        "decoder_heads": None,
        "mask_token": "[MASK]",  # the tokenizer's (the perturbation's "mask" uses it)
    }
    assert by_name["custom"]["kind"] == "custom" and by_name["custom"]["num_layers"] == 1
    assert all(m["description"] for m in body["models"])


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "models": ["minilm", "custom"], "failed": {}}


def test_openapi_documents_schemas(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("AttentionRequest", "AttentionResponse", "ErrorResponse", "ModelList", "CompactTensor"):
        assert name in schemas
    req = schemas["AttentionRequest"]["properties"]
    assert all(p.get("description") for p in req.values())
    op = spec["paths"]["/api/attention"]["post"]
    assert {"200", "404", "413", "422"} <= set(op["responses"])


def test_docs_page_is_offline(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "cdn" not in html.lower() and "https://" not in html
    assert client.get("/vendor/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/vendor/swagger/swagger-ui.css").status_code == 200
    assert client.get("/vendor/swagger/../../etc/passwd").status_code == 404


def test_concurrent_requests_share_tokenizer_safely(client: TestClient) -> None:
    """Parallel requests (different lengths, both models) all succeed and equal their serial answers."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"Sentence number {i} " + "and more words " * i for i in range(12)]
    bodies = [{"text": t, "model": ("minilm", "custom")[i % 2]} for i, t in enumerate(texts)]
    serial = [client.post("/api/attention", json=b).content for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda b: client.post("/api/attention", json=b), bodies))
    assert [r.status_code for r in parallel] == [200] * len(bodies)
    for got, want in zip(parallel, serial, strict=True):
        a, b = np.array(got.json()["attention"]), np.array(orjson_loads(want)["attention"])
        np.testing.assert_allclose(a, b, atol=2e-4)  # batching changes float rounding, not results


def orjson_loads(raw: bytes) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(raw)
