"""Encoder–decoder models (T5, BART, Marian) through the API, against transformers' own eager attention.

Each family is a tiny random model built from its own config class with a tokenizer trained in the test
(a SentencePiece-style Unigram for T5 and Marian, byte-level BPE for BART). The reference loads the same
folder independently with ``attn_implementation="eager"`` and runs it with ``decoder_input_ids`` = the
decoder start token followed by the tokenized target, ``output_attentions=True``: its ``encoder_attentions``,
``decoder_attentions`` and ``cross_attentions`` are what the API's ``attention``, ``decoder_attention`` and
``cross_attention`` must equal.
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
from headmap.models.capture import Captured
from headmap.models.engine import Seq2SeqAttention
from headmap.models.hf import engine_of, load_hf
from headmap.schemas.attention import AttentionRequest
from headmap.serving import attention as service
from headmap.serving.encoding import dequantise
from headmap.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import HEADS, LAYERS, SEQ2SEQ_MAKERS, make_bert, served_engine

FAMILIES = ["t5", "bart", "marian"]
SOURCE = "The cat sat on the mat because it was tired."
TARGET = "Die Katze saß auf der Matte."
OTHER_SOURCE = "Where is it?"
OTHER_TARGET = "Le chat est assis sur le tapis, weil sie müde war."
#: JSON weights are rounded to 4 decimals (<= 5e-5) on top of the float32 arithmetic.
JSON_ATOL = 5e-5 + 1e-5
EXACT = 1e-5
PARTS = ("encoder_attentions", "decoder_attentions", "cross_attentions")


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    out = {family: SEQ2SEQ_MAKERS[family](root / family) for family in FAMILIES}
    out["bert"] = make_bert(root / "bert")
    return out


@pytest.fixture(scope="module")
def client(paths: dict[str, Path]) -> Iterator[TestClient]:
    models = ",".join(f"{name}={path}" for name, path in paths.items())
    app = create_app(Settings(builtin_models="", models=models, default_model="bert"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def references(paths: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """``{family: (tokenizer, eager model)}`` loaded independently of Headmap."""
    from transformers import AutoModel, AutoTokenizer

    return {
        family: (AutoTokenizer.from_pretrained(paths[family]),
                 AutoModel.from_pretrained(paths[family], attn_implementation="eager").eval())
        for family in FAMILIES
    }  # fmt: skip


def eager(references: dict[str, tuple[Any, Any]], family: str, source: str, target: str | None) -> dict[str, Any]:
    """transformers' eager run of one source and decoder input (start token + tokenized target).

    Returns the token strings and each attention as (L, H, Tq, Tk) float64."""
    tok, model = references[family]
    ids = tok(source, return_tensors="pt")["input_ids"]  # (1, S)
    labels = tok(text_target=target)["input_ids"] if target is not None else []
    dec = torch.tensor([[model.config.decoder_start_token_id, *labels]])  # (1, T)
    with torch.inference_mode():
        out = model(input_ids=ids, decoder_input_ids=dec, output_attentions=True)
    result: dict[str, Any] = {part: torch.cat(getattr(out, part)).double().numpy() for part in PARTS}
    result["tokens"] = tok.convert_ids_to_tokens(ids[0].tolist())
    result["target_tokens"] = tok.convert_ids_to_tokens(dec[0].tolist())
    return result


@pytest.mark.parametrize("family", FAMILIES)
def test_three_attentions_equal_eager(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    engine = served_engine(client, family)
    assert engine.kind == "encoder-decoder"
    assert engine.capture, f"{family} should run on the capture path"
    want = eager(references, family, SOURCE, TARGET)
    r = client.post("/api/attention", json={"text": SOURCE, "target": TARGET, "model": family})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "encoder-decoder"
    assert body["tokens"] == want["tokens"]
    assert body["target_tokens"] == want["target_tokens"]
    s, t = len(want["tokens"]), len(want["target_tokens"])
    assert s != t  # so a swapped axis could not pass
    for field, part, shape in (
        ("attention", "encoder_attentions", (LAYERS, HEADS, s, s)),
        ("decoder_attention", "decoder_attentions", (LAYERS, HEADS, t, t)),
        ("cross_attention", "cross_attentions", (LAYERS, HEADS, t, s)),
    ):
        got = np.array(body[field])
        assert got.shape == want[part].shape == shape, field
        np.testing.assert_allclose(got, want[part], atol=JSON_ATOL, rtol=0, err_msg=field)
    # The decoder's self-attention is causal: nothing above the diagonal.
    assert np.all(np.triu(np.array(body["decoder_attention"]), k=1) == 0)
    # Unrounded, what the API encodes equals eager to 1e-5.
    req = AttentionRequest(text=SOURCE, target=TARGET, model=family)
    result = service.compute_sync(client.app.state.registry, req)  # type: ignore[attr-defined]
    assert result.decoder is not None and result.cross is not None
    for attn, part in ((result.attention, "encoder_attentions"), (result.decoder, "decoder_attentions"),
                       (result.cross, "cross_attentions")):  # fmt: skip
        assert isinstance(attn, Captured)
        exact = service.select(attn, list(range(LAYERS)), list(range(HEADS))).double().numpy()
        np.testing.assert_allclose(exact, want[part], atol=EXACT, rtol=0, err_msg=part)


@pytest.mark.parametrize("family", FAMILIES)
def test_target_token_fields(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """The target's tokens come with offsets into `target`, special flags and labels like the source's."""
    tok, model = references[family]
    body = client.post("/api/attention", json={"text": SOURCE, "target": TARGET, "model": family}).json()
    enc = tok(text_target=TARGET, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert body["target_special"] == [True] + [bool(m) for m in enc["special_tokens_mask"]]
    want_offsets = [None] + [None if m else list(o) for o, m in zip(enc["offset_mapping"], enc["special_tokens_mask"],
                                                                       strict=True)]  # fmt: skip
    assert body["target_offsets"] == want_offsets
    assert body["target_tokens"][0] == tok.convert_ids_to_tokens(model.config.decoder_start_token_id)
    n = len(body["target_tokens"])
    assert len(body["target_labels"]) == len(body["target_word_ids"]) == len(body["target_unknown"]) == n
    assert body["target_truncated"] is False
    assert body["decoder_layers"] == list(range(LAYERS)) and body["decoder_heads"] == list(range(HEADS))


@pytest.mark.parametrize("family", FAMILIES)
def test_subset_and_padded_batch_equal_eager(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """`layers`/`heads` apply to all three; two items of different source and target lengths in one batch."""
    engine = served_engine(client, family)
    one = eager(references, family, SOURCE, TARGET)
    body = client.post(
        "/api/attention", json={"text": SOURCE, "target": TARGET, "model": family, "layers": [1], "heads": [3, 0]}
    ).json()
    assert body["layers"] == body["decoder_layers"] == [1] and body["heads"] == body["decoder_heads"] == [3, 0]
    for field, part in zip(("attention", "decoder_attention", "cross_attention"), PARTS, strict=True):
        np.testing.assert_allclose(np.array(body[field]), one[part][[1]][:, [3, 0]], atol=JSON_ATOL, rtol=0)
    two = eager(references, family, OTHER_SOURCE, OTHER_TARGET)
    encs = []
    for source, target in ((SOURCE, TARGET), (OTHER_SOURCE, OTHER_TARGET)):
        enc = engine.encode(source)
        enc.target = engine.encode_target(target)
        encs.append(enc)
    assert len(encs[0]) > len(encs[1]) and len(encs[0].target or []) < len(encs[1].target or [])  # both padded
    for item, want in zip(engine.run(encs), (one, two), strict=True):
        assert isinstance(item, Seq2SeqAttention)
        for attn, part in zip((item.encoder, item.decoder, item.cross), PARTS, strict=True):
            assert isinstance(attn, Captured)
            got = attn.select(list(range(LAYERS)), list(range(HEADS))).double().numpy()
            np.testing.assert_allclose(got, want[part], atol=EXACT, rtol=0, err_msg=part)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_without_target_the_decoder_start_token_alone(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    want = eager(references, family, SOURCE, None)
    body = client.post("/api/attention", json={"text": SOURCE, "model": family}).json()
    assert body["target_tokens"] == want["target_tokens"] and len(body["target_tokens"]) == 1
    np.testing.assert_allclose(np.array(body["decoder_attention"]), np.ones((LAYERS, HEADS, 1, 1)), atol=JSON_ATOL)
    np.testing.assert_allclose(np.array(body["cross_attention"]), want["cross_attentions"], atol=JSON_ATOL, rtol=0)


@pytest.mark.parametrize("family", ["t5", "marian"])
def test_compact_encoding_shapes(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    want = eager(references, family, SOURCE, TARGET)
    body = client.post(
        "/api/attention", json={"text": SOURCE, "target": TARGET, "model": family, "encoding": "compact"}
    ).json()
    assert body["attention"] is None and body["decoder_attention"] is None and body["cross_attention"] is None
    s, t = len(want["tokens"]), len(want["target_tokens"])
    for field, part, shape in (
        ("attention_compact", "encoder_attentions", [LAYERS, HEADS, s, s]),
        ("decoder_attention_compact", "decoder_attentions", [LAYERS, HEADS, t, t]),
        ("cross_attention_compact", "cross_attentions", [LAYERS, HEADS, t, s]),
    ):
        assert body[field]["shape"] == shape, field
        np.testing.assert_allclose(dequantise(body[field]), want[part], atol=1 / 510 + 1e-6, rtol=0, err_msg=field)


def test_eager_fallback_equals_eager(paths: dict[str, Path], references) -> None:  # type: ignore[no-untyped-def]
    """A model kept off the capture (as notebooks do) gives the same three attentions through eager."""
    tok, _ = references["bart"]
    model = load_hf("probe", paths["bart"]).model
    model.set_attn_implementation("eager")
    engine = engine_of("bart-eager", model, tok, source="test", capture=False)
    assert not engine.capture
    want = eager(references, "bart", SOURCE, TARGET)
    enc = engine.encode(SOURCE)
    enc.target = engine.encode_target(TARGET)
    (item,) = engine.run([enc])
    assert isinstance(item, Seq2SeqAttention) and isinstance(item.cross, torch.Tensor)
    for attn, part in zip((item.encoder, item.decoder, item.cross), PARTS, strict=True):
        assert isinstance(attn, torch.Tensor)
        np.testing.assert_allclose(attn.double().numpy(), want[part], atol=EXACT, rtol=0, err_msg=part)


# -- bad input ---------------------------------------------------------------------------------------


def test_target_on_an_encoder_is_422(client: TestClient) -> None:
    r = client.post("/api/attention", json={"text": SOURCE, "target": TARGET, "model": "bert"})
    assert r.status_code == 422
    assert r.json()["error"] == "target_unsupported" and "encoder" in r.json()["detail"]


@pytest.mark.parametrize("target", ["", "   "])
def test_blank_target_is_422(client: TestClient, target: str) -> None:
    r = client.post("/api/attention", json={"text": SOURCE, "target": target, "model": "t5"})
    assert r.status_code == 422 and r.json()["error"] == "empty_text" and "target" in r.json()["detail"]


def test_target_over_the_limit_is_413_or_truncated(client: TestClient) -> None:
    engine = served_engine(client, "t5")
    long = " ".join(["Katze"] * engine.max_tokens)
    r = client.post("/api/attention", json={"text": SOURCE, "target": long, "model": "t5"})
    assert r.status_code == 413 and r.json()["error"] == "too_many_tokens" and "target" in r.json()["detail"]
    body = client.post("/api/attention", json={"text": SOURCE, "target": long, "model": "t5", "truncate": True}).json()
    assert body["target_truncated"] is True and len(body["target_tokens"]) == engine.max_tokens


def test_decoder_layer_out_of_range_is_422(client: TestClient) -> None:
    r = client.post("/api/attention", json={"text": SOURCE, "target": TARGET, "model": "bart", "layers": [LAYERS]})
    assert r.status_code == 422 and r.json()["error"] == "layer_out_of_range"


# -- the other routes on an encoder–decoder model -------------------------------------------------------


def test_models_list_the_decoder(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    for family in FAMILIES:
        m = models[family]
        assert (m["kind"], m["family"], m["decoder_layers"], m["decoder_heads"]) == (
            "encoder-decoder", family, LAYERS, HEADS,
        )  # fmt: skip
    assert models["bert"]["decoder_layers"] is None


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_stats_aggregate_heads_describe_the_encoder(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    """Routes over square attention take the encoder's self-attention (and refuse a `target`) instead of failing."""
    want = eager(references, family, SOURCE, None)["encoder_attentions"]  # (L, H, S, S)
    stats = client.post("/api/stats", json={"text": SOURCE, "model": family})
    assert stats.status_code == 200, stats.text
    w = want[0, 0]
    entropy = float(-(w * np.log(np.where(w > 0, w, 1))).sum(axis=-1).mean())  # mean row entropy, nats
    assert abs(stats.json()["stats"]["entropy"][0][0] - entropy) < 1e-4
    agg = client.post("/api/aggregate", json={"text": SOURCE, "model": family, "methods": ["mean"]})
    assert agg.status_code == 200, agg.text
    np.testing.assert_allclose(np.array(agg.json()["mean"]), want.mean(axis=1), atol=JSON_ATOL)
    assert client.post("/api/heads", json={"text": SOURCE, "model": family}).status_code == 200
    r = client.post("/api/stats", json={"text": SOURCE, "target": TARGET, "model": family})
    assert r.status_code == 422 and "target" in r.json()["detail"]
    r = client.post("/api/attention", json={"text": SOURCE, "model": family, "measure": "norms"})
    assert r.status_code == 422 and r.json()["error"] == "measure_unsupported"


def test_notebook_api_gives_the_encoder(references) -> None:  # type: ignore[no-untyped-def]
    import headmap

    tok, model = references["marian"]
    result = headmap.attention(model, tok, SOURCE)
    want = eager(references, "marian", SOURCE, None)["encoder_attentions"]
    assert result.kind == "encoder-decoder" and "encoder self-attention" in result.description
    np.testing.assert_allclose(np.asarray(result.full), want, atol=EXACT, rtol=0)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_compare_and_corpus_batches_use_the_encoder(client: TestClient, references, family: str) -> None:  # type: ignore[no-untyped-def]
    from headmap.corpus.compute import padded_attention

    long, short = (eager(references, family, text, None)["encoder_attentions"] for text in (SOURCE, OTHER_SOURCE))
    r = client.post("/api/compare", json={"a": {"text": SOURCE, "model": family},
                                          "b": {"text": SOURCE, "model": family}})  # fmt: skip
    assert r.status_code == 200, r.text
    engine = served_engine(client, family)
    batch = padded_attention(engine, [engine.encode(SOURCE), engine.encode(OTHER_SOURCE)])  # (L, B, H, S, S)
    np.testing.assert_allclose(batch[:, 0].double().numpy(), long, atol=EXACT, rtol=0)
    n = short.shape[-1]
    np.testing.assert_allclose(batch[:, 1, :, :n, :n].double().numpy(), short, atol=EXACT, rtol=0)


def test_decoder_and_cross_weights_count_toward_the_response_budget(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`HEADMAP_MAX_RESPONSE_MB` counts all three attentions: a long target on a short source is refused, even
    though the encoder's weights alone fit, and the body it would have sent is indeed over the budget."""
    body = {"text": "The cat sat.", "target": " ".join([TARGET] * 2), "model": "bart"}
    whole = client.post("/api/attention", json=body)
    assert whole.status_code == 200, whole.text
    s, t = len(whole.json()["tokens"]), len(whole.json()["target_tokens"])
    assert t > 2 * s
    encoder_only = LAYERS * HEADS * s * s * 7  # JSON: 7 bytes a weight
    everything = LAYERS * HEADS * (s * s + t * t + t * s) * 7
    limit_mb = (encoder_only + everything) / 2 / (1 << 20)
    assert len(whole.content) > limit_mb * (1 << 20)  # the real body is over the limit: the refusal is right
    settings = client.app.state.settings  # type: ignore[attr-defined]
    monkeypatch.setattr(client.app.state, "settings", settings.model_copy(update={"max_response_mb": limit_mb}))  # type: ignore[attr-defined]
    r = client.post("/api/attention", json=body)
    assert r.status_code == 413 and r.json()["error"] == "response_too_large", r.text
    assert f"about {everything / (1 << 20):.0f} MiB" in r.json()["detail"]
    assert client.post("/api/attention", json={**body, "target": TARGET}).status_code == 200  # a short target fits
