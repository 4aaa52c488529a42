"""Runs (issue 13): tiles against transformers' eager ``output_attentions``, overviews against a NumPy pooling of
the eager matrix written here, the run cache's byte accounting, LRU eviction and expiry, ETag/304, many clients
at once, and every bad parameter answered with a JSON 4xx.

The models are tiny random ones built here: a Llama-style decoder with grouped-query attention (4 query heads on
2 key/value heads, RoPE) and a BERT encoder, both with position limits of thousands of tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.serving import runs as runs_service
from headmap.serving.encoding import dequantise
from headmap.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import CORPUS, HIDDEN, LAYERS, LLM_HEADS, LLM_KV_HEADS, WORDPIECE_VOCAB

#: Position limits of the two test models: room for the slow 2k-token checks.
POSITIONS = 4096
#: /api/attention's limit on this server (HEADMAP_MAX_TOKENS); runs go past it.
ATTENTION_MAX = 256
#: JSON weights carry 4 decimals (<= 5e-5) on top of float32 arithmetic.
JSON_ATOL = 5e-5 + 1e-5
EXACT = 1e-5
HEAD_DIM = HIDDEN // LLM_HEADS


def make_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaModel

    from tests.tiny_models import _byte_level_tokenizer, _llm_common

    common = {**_llm_common(_byte_level_tokenizer(folder, POSITIONS)), "max_position_embeddings": POSITIONS}
    torch.manual_seed(13)
    LlamaModel(LlamaConfig(**common)).eval().save_pretrained(folder)
    return folder


def make_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    vocab = {token: i for i, token in enumerate(WORDPIECE_VOCAB)}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=POSITIONS)
    config = BertConfig(
        vocab_size=len(WORDPIECE_VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=POSITIONS,
        type_vocab_size=2,
        pad_token_id=0,
    )
    torch.manual_seed(14)
    BertModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"llama": make_llama(root / "llama"), "bert": make_bert(root / "bert")}


@pytest.fixture(scope="module")
def runs_app(paths: dict[str, Path]) -> FastAPI:
    models = ",".join(f"{name}={path}" for name, path in paths.items())
    return create_app(Settings(builtin_models="", models=models, default_model="llama", max_tokens=ATTENTION_MAX))


@pytest.fixture(scope="module")
def runs_client(runs_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(runs_app) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def store(runs_app: FastAPI, runs_client: TestClient) -> Iterator[runs_service.RunStore]:
    """A fresh run store for one test (64 MB, 1 h), with a clock the test moves by hand."""
    now = [1000.0]
    fresh = runs_service.RunStore(64 * 2**20, 3600.0, clock=lambda: now[0])
    fresh.now = now  # type: ignore[attr-defined]
    runs_app.state.runs = fresh
    yield fresh
    runs_app.state.runs = None


@pytest.fixture(scope="module")
def references(paths: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """``{name: (tokenizer, eager model)}`` loaded independently of Headmap."""
    from transformers import AutoModel, AutoTokenizer

    return {
        name: (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path, attn_implementation="eager").eval())
        for name, path in paths.items()
    }


def long_text(tok: Any, tokens: int) -> str:
    """Sentences of the tokenizer's own corpus, repeated until the text has at least ``tokens`` tokens."""
    sentences = itertools.cycle(CORPUS[:4])
    text = ""
    while len(tok(text)["input_ids"]) < tokens:
        text = f"{text} {next(sentences)}".strip()
    return text


def eager(references: dict[str, tuple[Any, Any]], name: str, text: str) -> np.ndarray:
    """transformers' eager attention of ``text``: (L, H, T, T) float64."""
    tok, model = references[name]
    enc = tok(text, return_tensors="pt")
    if name != "bert":
        enc.pop("token_type_ids", None)
    with torch.inference_mode():
        layers = model(**enc, output_attentions=True).attentions  # L x (1, H, T, T)
    return torch.cat(layers).double().numpy()


def pooled(matrix: np.ndarray, size: int, reduce: str) -> tuple[np.ndarray, np.ndarray]:
    """The overview's definition, written out: bounds from numpy.linspace rounded, each cell a block's max/mean."""
    t = matrix.shape[0]
    n = min(size, t)
    bounds = np.rint(np.linspace(0, t, n + 1)).astype(int)
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            block = matrix[bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]]
            out[i, j] = block.max() if reduce == "max" else block.mean()
    return bounds, out


def of_head(layer: np.ndarray, head: int | str) -> np.ndarray:
    """(H, T, T) -> (T, T): one head, or the mean / max over heads."""
    if head == "mean":
        return layer.mean(axis=0)
    if head == "max":
        return layer.max(axis=0)
    assert isinstance(head, int)
    return layer[head]


def open_run(runs_client: TestClient, model: str, text: str, **extra: Any) -> dict[str, Any]:
    r = runs_client.post("/api/runs", json={"text": text, "model": model, **extra})
    assert r.status_code == 200, r.text
    assert r.headers["location"] == f"/api/runs/{r.json()['run_id']}"
    return dict(r.json())


def get_tile(runs_client: TestClient, run_id: str, **params: Any) -> dict[str, Any]:
    r = runs_client.get(f"/api/runs/{run_id}/tile", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


TILES = [  # (layer, head, q0, q1, k0, k1): corners, across the diagonal, one row, one column
    (0, 0, 0, 37, 0, 50),
    (1, 3, 100, 180, 90, 200),
    (1, 1, 250, 300, 0, 300),
    (0, 2, 299, 300, 0, 300),
    (1, 0, 0, 300, 150, 151),
    (0, "mean", 40, 140, 30, 160),
    (1, "max", 200, 300, 0, 120),
]


def check_tiles(runs_client: TestClient, runs_app: FastAPI, references, name: str, tokens: int, tiles) -> None:  # type: ignore[no-untyped-def]
    text = long_text(references[name][0], tokens)
    expected = eager(references, name, text)  # (L, H, T, T)
    info = open_run(runs_client, name, text)
    t = info["num_tokens"]
    assert t == expected.shape[-1] >= tokens and t > ATTENTION_MAX
    assert info["tokens"] == references[name][0].convert_ids_to_tokens(references[name][0](text)["input_ids"])
    run = runs_app.state.runs.get(info["run_id"])
    for layer, head, q0, q1, k0, k1 in tiles:
        want = of_head(expected[layer], head)[q0:q1, k0:k1]
        body = get_tile(runs_client, info["run_id"], layer=layer, head=head, q0=q0, q1=q1, k0=k0, k1=k1)
        assert (body["q0"], body["q1"], body["k0"], body["k1"], body["head"]) == (q0, q1, k0, k1, head)
        np.testing.assert_allclose(np.array(body["weights"]), want, atol=JSON_ATOL, rtol=0)
        compact = get_tile(runs_client, info["run_id"], layer=layer, head=head, q0=q0, q1=q1, k0=k0, k1=k1,
                           encoding="compact")  # fmt: skip
        assert compact["weights"] is None and compact["weights_compact"]["shape"] == [q1 - q0, k1 - k0]
        np.testing.assert_allclose(dequantise(compact["weights_compact"]), want, atol=1 / 510 + 1e-6, rtol=0)
        # Unrounded, what the route encodes equals eager to 1e-5.
        exact = runs_service.tile(run, layer, head, q0, q1, k0, k1).double().numpy()
        np.testing.assert_allclose(exact, want, atol=EXACT, rtol=0)


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_tiles_equal_eager(runs_client: TestClient, runs_app: FastAPI, store, references, name: str) -> None:  # type: ignore[no-untyped-def]
    """300 tokens, past this server's /api/attention limit (HEADMAP_MAX_TOKENS=256)."""
    assert (
        runs_client.post("/api/attention", json={"text": long_text(references[name][0], 300), "model": name}).json()[
            "error"
        ]
        == "too_many_tokens"
    )
    check_tiles(runs_client, runs_app, references, name, 300, TILES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "bert"])
def test_tiles_equal_eager_2k(runs_client: TestClient, runs_app: FastAPI, store, references, name: str) -> None:  # type: ignore[no-untyped-def]
    tiles = [(0, 1, 0, 512, 0, 512), (1, 2, 1536, 2048, 1536, 2048), (1, "mean", 2000, 2048, 0, 512),
             (0, "max", 700, 1212, 1500, 2012), (1, 3, 1024, 1025, 0, 512)]  # fmt: skip
    check_tiles(runs_client, runs_app, references, name, 2048, tiles)


def check_overviews(runs_client: TestClient, runs_app: FastAPI, references, name: str, tokens: int, cases) -> None:  # type: ignore[no-untyped-def]
    text = long_text(references[name][0], tokens)
    expected = eager(references, name, text)  # (L, H, T, T)
    info = open_run(runs_client, name, text)
    run = runs_app.state.runs.get(info["run_id"])
    for layer, head, size, reduce in cases:
        bounds, want = pooled(of_head(expected[layer], head), size, reduce)
        params = {"layer": layer, "head": head, "size": size, "reduce": reduce}
        r = runs_client.get(f"/api/runs/{info['run_id']}/overview", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["layer"], body["head"], body["reduce"], body["size"]) == (layer, head, reduce, len(bounds) - 1)
        assert body["num_tokens"] == expected.shape[-1]
        assert body["q_bounds"] == body["k_bounds"] == bounds.tolist()
        np.testing.assert_allclose(np.array(body["matrix"]), want, atol=JSON_ATOL, rtol=0)
        _, _, exact = runs_service.overview(run, layer, head, size, reduce)
        np.testing.assert_allclose(exact.double().numpy(), want, atol=EXACT, rtol=0)


OVERVIEWS = [  # (layer, head, size, reduce): blocks of 1 token (size >= T), uneven blocks, one block
    (0, 0, 512, "max"),
    (1, 2, 37, "mean"),
    (1, 3, 64, "max"),
    (0, "mean", 128, "mean"),
    (1, "max", 100, "max"),
    (0, 1, 1, "mean"),
]


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_overviews_equal_numpy_pooling_of_eager(
    runs_client: TestClient, runs_app: FastAPI, store, references, name: str
) -> None:  # type: ignore[no-untyped-def]
    check_overviews(runs_client, runs_app, references, name, 300, OVERVIEWS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "bert"])
def test_overviews_equal_numpy_pooling_of_eager_2k(  # type: ignore[no-untyped-def]
    runs_client: TestClient, runs_app: FastAPI, store, references, name: str
) -> None:
    check_overviews(
        runs_client, runs_app, references, name, 2048, [(1, 0, 256, "max"), (0, "mean", 200, "mean"), (1, 3, 3, "max")]
    )


def test_overview_is_pooled_in_row_chunks(
    runs_client: TestClient, runs_app: FastAPI, store, references, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """With chunks of 7 query rows (blocks span chunks), the overview is the same pooling of the eager matrix."""
    monkeypatch.setattr(runs_service, "CHUNK_FLOATS", 7 * 300)
    check_overviews(runs_client, runs_app, references, "llama", 300, [(1, "mean", 40, "mean"), (0, 2, 13, "max")])


# -- vectors: one row or one column (the text view of a long input) -------------------------------------

#: Vectors carry 6 decimals (<= 5e-7) on top of float32 arithmetic.
VECTOR_ATOL = 5e-7 + 1e-5
VECTORS = [  # (layer, head, index, axis): first / last token, a row and a column of each head choice
    (0, 0, 0, "query"),
    (1, 3, 299, "query"),
    (1, 2, 150, "key"),
    (0, 1, 0, "key"),
    (0, "mean", 77, "query"),
    (1, "mean", 201, "key"),
    (1, "max", 12, "query"),
    (0, "max", 260, "key"),
]


def check_vectors(runs_client: TestClient, runs_app: FastAPI, references, name: str, tokens: int, cases) -> None:  # type: ignore[no-untyped-def]
    text = long_text(references[name][0], tokens)
    expected = eager(references, name, text)  # (L, H, T, T)
    info = open_run(runs_client, name, text)
    t = info["num_tokens"]
    assert t == expected.shape[-1] > ATTENTION_MAX
    for layer, head, index, axis in cases:
        matrix = of_head(expected[layer], head)  # (T, T) NumPy mean / max over eager's heads
        want = matrix[index] if axis == "query" else matrix[:, index]
        r = runs_client.get(
            f"/api/runs/{info['run_id']}/vector", params={"layer": layer, "head": head, "index": index, "axis": axis}
        )
        assert r.status_code == 200, r.text
        assert r.headers["etag"].startswith("W/") and "immutable" in r.headers["cache-control"]
        body = r.json()
        assert (body["layer"], body["head"], body["index"], body["axis"], body["num_tokens"]) == (
            layer, head, index, axis, t
        )  # fmt: skip
        np.testing.assert_allclose(np.array(body["weights"]), want, atol=VECTOR_ATOL, rtol=0)
    if name == "llama":  # causal: a query's row is 0 past it, a key's column 0 before it
        row = runs_client.get(f"/api/runs/{info['run_id']}/vector?layer=0&head=0&index=100&axis=query").json()
        col = runs_client.get(f"/api/runs/{info['run_id']}/vector?layer=0&head=0&index=100&axis=key").json()
        assert not any(row["weights"][101:]) and not any(col["weights"][:100])
        assert abs(sum(row["weights"]) - 1) < 1e-3


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_vectors_equal_eager(runs_client: TestClient, runs_app: FastAPI, store, references, name: str) -> None:  # type: ignore[no-untyped-def]
    """Rows and columns of 300-token runs (GQA Llama: 4 query heads on 2 key heads; BERT) against eager."""
    check_vectors(runs_client, runs_app, references, name, 300, VECTORS)


def test_vector_columns_are_computed_in_row_chunks(
    runs_client: TestClient, runs_app: FastAPI, store, references, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """With chunks of 7 x 300 weights (7 query rows of one head, 300 = 42 x 7 + 6; 1 row of 4 heads), each column
    is still eager's column."""
    monkeypatch.setattr(runs_service, "CHUNK_FLOATS", 7 * 300)
    check_vectors(runs_client, runs_app, references, "llama", 300, [(1, "mean", 3, "key"), (0, 2, 299, "key"),
                                                                   (1, "max", 120, "key")])  # fmt: skip


def test_vector_etag_and_bad_parameters(runs_client: TestClient, store) -> None:
    info = open_run(runs_client, "llama", "The cat sat on the mat because it was tired.")
    t = info["num_tokens"]
    base = f"/api/runs/{info['run_id']}/vector"
    first = runs_client.get(f"{base}?layer=1&head=mean&index=2&axis=key")
    tag = first.headers["etag"]
    again = runs_client.get(f"{base}?layer=1&head=mean&index=2&axis=key", headers={"If-None-Match": tag})
    assert again.status_code == 304
    other = runs_client.get(f"{base}?layer=1&head=mean&index=2&axis=query")
    assert other.headers["etag"] != first.headers["etag"]
    cases = [
        (f"{base}?layer=0&head=0&index={t}", 422, "bad_range"),  # past the last token
        (f"{base}?layer=0&head=0&index=-1", 422, "invalid_request"),
        (f"{base}?layer=0&head=0&index=x", 422, "invalid_request"),
        (f"{base}?layer=0&head=0", 422, "invalid_request"),  # index missing
        (f"{base}?layer=0&head=0&index=0&axis=row", 422, "invalid_request"),
        (f"{base}?layer=0&head={LLM_HEADS}&index=0", 422, "bad_head"),
        (f"{base}?layer=0&head=median&index=0", 422, "invalid_request"),
        (f"{base}?layer={LAYERS}&head=0&index=0", 422, "bad_layer"),
        (f"{base}?head=0&index=0", 422, "invalid_request"),
        ("/api/runs/nope/vector?layer=0&head=0&index=0", 404, "run_not_found"),
        ("/api/runs/nope/vector?layer=0&head=0&index=99999", 404, "run_not_found"),  # 404 before 422
    ]
    for url, status, code in cases:
        r = runs_client.get(url)
        assert (r.status_code, r.json()["error"]) == (status, code), (url, r.text)
        assert r.json()["detail"]


# -- the cache: bytes, LRU, expiry ----------------------------------------------------------------------


def held_bytes(tokens: int) -> int:
    """What the capture of the tiny Llama holds: queries [Hq, T, d] and keys [Hkv, T, d] of each layer, float32."""
    return LAYERS * (LLM_HEADS + LLM_KV_HEADS) * tokens * HEAD_DIM * 4


def test_bytes_are_queries_and_keys_linear_in_tokens(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    tok = references["llama"][0]
    infos = [open_run(runs_client, "llama", long_text(tok, n)) for n in (100, 400, 1600)]
    extra = {info["bytes"] - held_bytes(info["num_tokens"]) for info in infos}
    assert len(extra) == 1 and 0 <= extra.pop() <= 16384, "a run holds its queries and keys plus a fixed overhead"
    assert store.bytes == sum(info["bytes"] for info in infos)
    assert (infos[0]["num_kv_heads"], infos[0]["num_heads"], infos[0]["num_layers"]) == (
        LLM_KV_HEADS, LLM_HEADS, LAYERS
    )  # fmt: skip


def test_least_recently_used_run_goes_first(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    tok = references["llama"][0]
    text = long_text(tok, 400)  # three runs of one text: three runs all the same
    a, b = open_run(runs_client, "llama", text), open_run(runs_client, "llama", text)
    store.max_bytes = a["bytes"] + b["bytes"] + 1000  # room for two of them, not three
    assert runs_client.get(f"/api/runs/{a['run_id']}/tile?layer=0&head=0&q0=0&q1=2&k0=0&k1=2").status_code == 200
    c = open_run(runs_client, "llama", text)  # b is now the least recently used
    assert store.ids() == [a["run_id"], c["run_id"]] and store.evicted == 1
    assert store.bytes == a["bytes"] + c["bytes"] <= store.max_bytes
    r = runs_client.get(f"/api/runs/{b['run_id']}/overview?layer=0&head=0")
    assert r.status_code == 404 and r.json()["error"] == "run_not_found"
    # A run that alone is larger than the whole cache is refused before the model runs.
    store.max_bytes = held_bytes(300)
    r = runs_client.post("/api/runs", json={"text": long_text(tok, 400), "model": "llama"})
    assert r.status_code == 413 and r.json()["error"] == "run_too_large"
    assert "HEADMAP_RUN_CACHE_MB" in r.json()["detail"]
    assert store.ids() == [a["run_id"], c["run_id"]]  # nothing was evicted for it


def test_expiry(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    info = open_run(runs_client, "llama", long_text(references["llama"][0], 50))
    url = f"/api/runs/{info['run_id']}/overview?layer=0&head=1&size=8"
    r = runs_client.get(url)
    assert r.headers["cache-control"] == "private, max-age=3600, immutable"
    store.now[0] += 3000
    assert runs_client.get(url).headers["cache-control"] == "private, max-age=600, immutable"
    store.now[0] += 600
    r = runs_client.get(url)
    assert r.status_code == 404 and r.json()["error"] == "run_not_found"
    assert store.bytes == 0 and len(store) == 0 and store.expired == 1


def test_expires_at_is_utc_ttl_ahead(runs_client: TestClient, store) -> None:
    from datetime import UTC, datetime

    info = open_run(runs_client, "llama", "The cat sat on the mat.")
    at = datetime.fromisoformat(info["expires_at"].replace("Z", "+00:00"))
    assert at.tzinfo is not None and abs((at - datetime.now(UTC)).total_seconds() - 3600) < 120


def test_delete(runs_client: TestClient, store) -> None:
    info = open_run(runs_client, "llama", "The cat sat on the mat.")
    assert store.bytes == info["bytes"]
    r = runs_client.delete(f"/api/runs/{info['run_id']}")
    assert r.status_code == 204 and r.content == b""
    assert store.bytes == 0
    gone = f"/api/runs/{info['run_id']}"
    for r in (runs_client.delete(gone), runs_client.get(f"{gone}/tile?layer=0&head=0&q0=0&q1=1&k0=0&k1=1")):
        assert r.status_code == 404 and r.json()["error"] == "run_not_found"


# -- HTTP caching ---------------------------------------------------------------------------------------


def test_etag_and_304(runs_client: TestClient, store) -> None:
    info = open_run(runs_client, "llama", "The cat sat on the mat because it was tired.")
    base = f"/api/runs/{info['run_id']}"
    urls = [f"{base}/overview?layer=0&head=0&size=4", f"{base}/overview?layer=0&head=0&size=5",
            f"{base}/overview?layer=0&head=mean&size=4", f"{base}/tile?layer=1&head=2&q0=0&q1=3&k0=1&k1=4",
            f"{base}/tile?layer=1&head=2&q0=0&q1=3&k0=1&k1=4&encoding=compact"]  # fmt: skip
    tags = []
    for url in urls:
        r = runs_client.get(url)
        tag = r.headers["etag"]
        assert r.status_code == 200 and tag.startswith('W/"') and info["run_id"] in tag
        assert r.headers["cache-control"] == "private, max-age=3600, immutable"
        again = runs_client.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
        strong = tag.removeprefix("W/")  # weak comparison, as RFC 9110 asks for GET
        assert runs_client.get(url, headers={"If-None-Match": f'"other", {strong}'}).status_code == 304
        assert runs_client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        assert runs_client.get(url).headers["etag"] == tag  # the same answer, the same tag
        tags.append(tag)
    assert len(set(tags)) == len(urls)  # each query its own tag
    # A tag of a run that is gone does not answer 304: the client learns to re-create the run.
    runs_client.delete(base)
    r = runs_client.get(urls[0], headers={"If-None-Match": tags[0]})
    assert r.status_code == 404 and r.json()["error"] == "run_not_found"


# -- many clients at once -------------------------------------------------------------------------------


def test_many_clients_open_and_read_runs_at_once(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    """12 clients, 6 at a time, each opening a run of its own text and reading an overview and two tiles."""
    tok = references["llama"][0]
    texts = [long_text(tok, 260 + 10 * i) for i in range(3)]
    expected = [eager(references, "llama", text) for text in texts]  # (L, H, T, T) each

    def session(i: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        which = i % len(texts)
        info = open_run(runs_client, "llama", texts[which])
        rid = info["run_id"]
        tile = get_tile(runs_client, rid, layer=1, head=i % LLM_HEADS, q0=200, q1=260, k0=0, k1=260)
        whole = get_tile(runs_client, rid, layer=0, head="mean", q0=0, q1=64, k0=0, k1=64)
        r = runs_client.get(f"/api/runs/{rid}/overview", params={"layer": 1, "head": i % LLM_HEADS, "size": 32})
        assert r.status_code == 200, r.text
        return which, np.array(tile["weights"]), np.array(whole["weights"]), np.array(r.json()["matrix"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(session, range(12)))
    for i, (which, tile, whole, overview) in enumerate(results):
        exp = expected[which]
        np.testing.assert_allclose(tile, exp[1, i % LLM_HEADS, 200:260, 0:260], atol=JSON_ATOL, rtol=0)
        np.testing.assert_allclose(whole, exp[0].mean(axis=0)[:64, :64], atol=JSON_ATOL, rtol=0)
        np.testing.assert_allclose(overview, pooled(exp[1, i % LLM_HEADS], 32, "max")[1], atol=JSON_ATOL, rtol=0)
    assert len(store) == 12


# -- bad parameters -------------------------------------------------------------------------------------


def test_bad_parameters_get_json_4xx(runs_client: TestClient, store) -> None:
    info = open_run(runs_client, "llama", "The cat sat on the mat because it was tired.")
    t = info["num_tokens"]
    base = f"/api/runs/{info['run_id']}"
    tile = f"{base}/tile?layer=0&head=0"
    cases = [
        (f"{tile}&q0=0&q1={t + 1}&k0=0&k1=2", 422, "bad_range"),  # past the last token
        (f"{tile}&q0=0&q1=2&k0=1&k1={t + 5}", 422, "bad_range"),
        (f"{tile}&q0=3&q1=3&k0=0&k1=2", 422, "bad_range"),  # q0 >= q1
        (f"{tile}&q0=4&q1=2&k0=0&k1=2", 422, "bad_range"),
        (f"{tile}&q0=0&q1=2&k0=2&k1=1", 422, "bad_range"),  # k0 >= k1
        (f"{tile}&q0=-1&q1=2&k0=0&k1=2", 422, "invalid_request"),
        (f"{base}/tile?layer=0&head={LLM_HEADS}&q0=0&q1=2&k0=0&k1=2", 422, "bad_head"),  # unknown head
        (f"{base}/tile?layer=0&head=median&q0=0&q1=2&k0=0&k1=2", 422, "invalid_request"),
        (f"{base}/tile?layer={LAYERS}&head=0&q0=0&q1=2&k0=0&k1=2", 422, "bad_layer"),
        (f"{base}/tile?layer=0&head=0&q0=0&q1=2", 422, "invalid_request"),  # k0, k1 missing
        (f"{base}/tile?layer=0&head=0&q0=0&q1=2&k0=0&k1=2&encoding=png", 422, "invalid_request"),
        (f"{base}/overview?layer=0&head={LLM_HEADS}", 422, "bad_head"),
        (f"{base}/overview?layer=-1&head=0", 422, "invalid_request"),
        (f"{base}/overview?layer=0&head=0&size=0", 422, "invalid_request"),
        (f"{base}/overview?layer=0&head=0&size=513", 422, "invalid_request"),
        (f"{base}/overview?layer=0&head=0&reduce=median", 422, "invalid_request"),
        (f"{base}/overview?head=0", 422, "invalid_request"),
        ("/api/runs/nope/overview?layer=0&head=0", 404, "run_not_found"),  # unknown run
        ("/api/runs/nope/tile?layer=0&head=0&q0=0&q1=1&k0=0&k1=1", 404, "run_not_found"),
    ]
    for url, status, code in cases:
        r = runs_client.get(url)
        assert (r.status_code, r.json()["error"]) == (status, code), (url, r.text)
        assert r.json()["detail"]
    assert runs_client.delete("/api/runs/nope").json()["error"] == "run_not_found"


def test_tile_too_large_is_413(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    info = open_run(runs_client, "llama", long_text(references["llama"][0], 600))
    base = f"/api/runs/{info['run_id']}/tile?layer=0&head=0"
    assert runs_client.get(f"{base}&q0=0&q1=512&k0=88&k1=600").status_code == 200  # 512 x 512 is the largest
    for q, k in (((0, 513), (0, 10)), ((0, 10), (50, 563)), ((0, 600), (0, 600))):
        r = runs_client.get(f"{base}&q0={q[0]}&q1={q[1]}&k0={k[0]}&k1={k[1]}")
        assert r.status_code == 413 and r.json()["error"] == "tile_too_large" and "512" in r.json()["detail"]


def test_bad_bodies(runs_client: TestClient, store, references) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ({"text": "   "}, 422, "empty_text"),
        ({"text": "hi", "model": "nope"}, 404, "model_not_found"),
        ({"text": "hi", "layers": [0]}, 422, "invalid_request"),  # not a field of runs
        ({"text": "hi", "encoding": "compact"}, 422, "invalid_request"),
        ({"text": "hi", "truncate": 1}, 422, "invalid_request"),  # strict
    ]
    for body, status, code in cases:
        r = runs_client.post("/api/runs", json=body)
        assert (r.status_code, r.json()["error"]) == (status, code), (body, r.text)


def test_token_limit_is_the_run_setting_capped_by_the_model(
    runs_client: TestClient, runs_app: FastAPI, store, references
) -> None:  # type: ignore[no-untyped-def]
    tok = references["bert"][0]
    text = long_text(tok, 700)
    settings = runs_app.state.settings
    old = settings.run_max_tokens
    settings.run_max_tokens = 500
    try:
        r = runs_client.post("/api/runs", json={"text": text, "model": "bert"})
        assert r.status_code == 413 and r.json()["error"] == "too_many_tokens" and "500" in r.json()["detail"]
        info = open_run(runs_client, "bert", text, truncate=True)
        assert info["num_tokens"] == 500 and info["truncated"] and info["tokens"][-1] == "[SEP]"
        settings.run_max_tokens = 10**6  # the model's own position limit still holds
        r = runs_client.post("/api/runs", json={"text": long_text(tok, POSITIONS + 10), "model": "bert"})
        assert r.status_code == 413 and str(POSITIONS) in r.json()["detail"]
    finally:
        settings.run_max_tokens = old


# -- a model without the capture keeps dense weights ---------------------------------------------------


def test_custom_block_runs_on_dense_weights(client: TestClient, app: FastAPI, registry) -> None:  # type: ignore[no-untyped-def]
    """The textbook block (no capture) keeps its [1, H, T, T] weights; its tiles equal minilm's layer 0 as
    transformers computes it eagerly (the block is initialised from that layer). On the session app."""
    from transformers import AutoModel, AutoTokenizer

    from headmap.models.registry import minilm_path

    store = app.state.runs = runs_service.RunStore(64 * 2**20, 3600.0)
    try:
        text = "The cat sat on the mat because it was tired. " * 8
        info = open_run(client, "custom", text)
        t = info["num_tokens"]
        assert info["kind"] == "custom" and info["bytes"] >= 12 * t * t * 4
        folder = minilm_path(registry.settings)
        tok, model = (
            AutoTokenizer.from_pretrained(folder),
            AutoModel.from_pretrained(folder, attn_implementation="eager"),
        )
        with torch.inference_mode():
            want = model(**tok(text, return_tensors="pt"), output_attentions=True).attentions[0][0].double().numpy()
        body = get_tile(client, info["run_id"], layer=0, head=5, q0=3, q1=t, k0=0, k1=t - 2)
        np.testing.assert_allclose(np.array(body["weights"]), want[5, 3:, : t - 2], atol=JSON_ATOL, rtol=0)
        # A dense run larger than the cache: 413 naming the models that keep queries and keys instead.
        store.max_bytes = 12 * t * t * 2
        r = client.post("/api/runs", json={"text": text, "model": "custom"})
        assert r.status_code == 413 and r.json()["error"] == "run_too_large" and "minilm" in r.json()["detail"]
    finally:
        app.state.runs = None
