"""Head detectors (`/api/heads`) on a tiny GPT-2 whose heads are set by hand.

Layer 0 head 0 is made a previous-token head (its queries and keys read a rotating position code,
the query rotated back by one step) that copies the previous token's identity into a spare subspace;
layer 1 head 1 is made an induction head (its query reads the current token, its key the copied
previous token). Every other head has zero Q/K/V, so it attends uniformly and writes nothing. The
detector must single out exactly those two heads, and its numbers must equal a NumPy computation
from transformers' own eager attention.
"""

from __future__ import annotations

import math
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
from tests.tiny_models import make_gpt2

D, HEADS, HD = 64, 2, 32  # hidden, heads, head size
POS = slice(0, 4)  # (cos, sin, -cos, -sin) of the position angle: mean zero, constant norm
TOKEN = slice(8, 32)  # the token's identity u (24 dims, mean zero, unit norm)
COPY = slice(32, 56)  # where layer 0 head 0 writes the previous token's u
THETA = math.pi / 24  # position angle step: unambiguous for up to 24 tokens


def hand_set(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2Model

    make_gpt2(folder)  # tokenizer and a config to start from
    config = GPT2Config.from_pretrained(folder)
    config.n_embd, config.n_head, config.n_layer, config.n_inner = D, HEADS, 2, 4 * D
    model = GPT2Model(config).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        u = torch.randn(config.vocab_size, TOKEN.stop - TOKEN.start, generator=gen)
        u -= u.mean(-1, keepdim=True)
        model.wte.weight[:, TOKEN] = u / u.norm(dim=-1, keepdim=True)
        angle = THETA * torch.arange(config.n_positions, dtype=torch.float32)
        model.wpe.weight[:, POS] = torch.stack([angle.cos(), angle.sin(), -angle.cos(), -angle.sin()], -1)
        for block in model.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.ln_f.weight.fill_(1.0)
        # Conv1D: y = x @ W + b; c_attn columns are [q | k | v], each HEADS x HD wide.
        w0 = model.h[0].attn.c_attn.weight  # (D, 3D)
        beta0 = 600.0
        rot = torch.tensor([[math.cos(THETA), -math.sin(THETA)], [math.sin(THETA), math.cos(THETA)]])
        # q_p = R(-θ) (cos θp, sin θp) = (cos θ(p-1), sin θ(p-1)): best match at key p - 1.
        w0[0:2, 0:2] = beta0 * rot  # x @ rot rotates the row vector (cos, sin) by -θ
        w0[0:2, D : D + 2] = torch.eye(2)  # key = position code
        w0[TOKEN, 2 * D : 2 * D + 24] = torch.eye(24)  # value = the token's u
        model.h[0].attn.c_proj.weight[0:24, COPY] = torch.eye(24)  # head 0's output -> COPY
        w1 = model.h[1].attn.c_attn.weight
        beta1 = 60.0
        w1[TOKEN, HD : HD + 24] = beta1 * torch.eye(24)  # head 1 query: the current token
        w1[COPY, D + HD : D + HD + 24] = torch.eye(24)  # head 1 key: the previous token (copied)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hand_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hand_set(tmp_path_factory.mktemp("hand-gpt2") / "hand")


@pytest.fixture(scope="module")
def hand_client(hand_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(builtin_models="", models=f"hand={hand_path}", default_model="hand"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def eager_attention(path: Path, ids: list[int]) -> np.ndarray:
    from transformers import GPT2Model

    model = GPT2Model.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return np.stack([a[0].double().numpy() for a in out.attentions])  # (L, H, T, T)


def scores(data: dict[str, Any], name: str) -> np.ndarray:
    return np.array(data["scores"][name])


def test_detectors_find_the_hand_set_heads(hand_client: TestClient) -> None:
    r = hand_client.post("/api/heads", json={"seed": 3, "random_length": 10})
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["num_layers"], data["num_heads"]) == (2, 2)
    assert len(data["random_tokens"]) == 20  # GPT-2 adds no special tokens
    prev, ind = scores(data, "previous_token"), scores(data, "induction")
    assert np.unravel_index(prev.argmax(), prev.shape) == (0, 0)
    assert prev[0, 0] > 0.95
    assert np.unravel_index(ind.argmax(), ind.shape) == (1, 1)
    # 9 of the 10 second-copy queries put ~all their attention on the token after their earlier copy; the
    # first one splits it with key 0, which (having no previous token) copied its own token: 9.5 / 10.
    assert ind[1, 1] > 0.9
    others = [(0, 1), (1, 0)]  # uniform causal attention: little of either
    assert all(prev[h] < 0.5 and ind[h] < 0.5 for h in others)
    assert data["scores"]["cls_sep"] is None  # GPT-2 has neither token
    assert set(data["definitions"]) == set(data["scores"])


def test_detector_numbers_equal_numpy(hand_client: TestClient, hand_path: Path) -> None:
    """Every score recomputed from transformers' eager attention with the definitions written out here."""
    from transformers import AutoTokenizer

    text = "The cat sat on the mat."
    data = hand_client.post("/api/heads", json={"seed": 7, "random_length": 8, "text": text}).json()
    tok = AutoTokenizer.from_pretrained(hand_path)
    rep_ids = tok.convert_tokens_to_ids(data["random_tokens"])
    assert rep_ids[:8] == rep_ids[8:]
    text_ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(text_ids) == data["tokens"]
    a = eager_attention(hand_path, text_ids)  # (L, H, T, T)
    t = a.shape[-1]
    expected = {
        "previous_token": np.mean([a[..., i, i - 1] for i in range(1, t)], axis=0),
        "next_token": np.mean([a[..., i, i + 1] for i in range(t - 1)], axis=0),
        "self": np.mean([a[..., i, i] for i in range(t)], axis=0),
        "first_token": np.mean([a[..., i, 0] for i in range(t)], axis=0),
    }
    r = eager_attention(hand_path, rep_ids)
    dup_rows, ind_rows = [], []
    for i, tok_i in enumerate(rep_ids):
        dup = [j for j in range(i) if rep_ids[j] == tok_i]
        ind = [j for j in range(1, i + 1) if rep_ids[j - 1] == tok_i and j - 1 < i]
        if dup:
            dup_rows.append(r[..., i, dup].sum(-1))
        if ind:
            ind_rows.append(r[..., i, ind].sum(-1))
    expected["duplicate_token"] = np.mean(dup_rows, axis=0)
    expected["induction"] = np.mean(ind_rows, axis=0)
    for name, value in expected.items():
        np.testing.assert_allclose(scores(data, name), value, atol=1e-4, err_msg=name)


def test_detectors_on_minilm_cls_sep(client: TestClient) -> None:
    """On BERT the [CLS]/[SEP] detector sums both positions; the random sequence is wrapped in them."""
    data = client.post("/api/heads", json={"text": "Hello world", "random_length": 5}).json()
    assert data["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    assert data["random_tokens"][0] == "[CLS]" and data["random_tokens"][-1] == "[SEP]"
    assert data["random_tokens"][1:6] == data["random_tokens"][6:11]
    r = client.post("/api/attention", json={"text": "Hello world"}).json()
    a = np.array(r["attention"])  # (L, H, 4, 4), 4 decimals
    np.testing.assert_allclose(np.array(data["scores"]["cls_sep"]), a[..., [0, 3]].sum(-1).mean(-1), atol=2e-4)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "nope"}, 404, "model_not_found"),
        ({"text": "   "}, 422, "empty_text"),
        ({"random_length": 1}, 422, "invalid_request"),
        ({"random_length": 300}, 422, "invalid_request"),
        ({"seed": -1}, 422, "invalid_request"),
        ({"text": "a " * 600}, 413, "too_many_tokens"),
        ({"random_length": 256}, 422, "random_length_out_of_range"),  # 2 x 256 + [CLS] + [SEP] > 512
        ({"model": "custom", "random_length": 100, "text": "x"}, 200, None),  # weights only: any engine
    ],
)
def test_heads_errors(client: TestClient, body: dict[str, Any], status: int, error: str | None) -> None:
    r = client.post("/api/heads", json=body)
    assert r.status_code == status, r.text
    if error:
        assert r.json()["error"] == error
