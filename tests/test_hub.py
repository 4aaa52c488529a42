"""Models named by Hugging Face hub id, resolved offline from a real cache layout built in a temp dir.

The cache is laid out as huggingface_hub writes it (``models--org--name/{blobs,refs,snapshots/<commit>}``,
snapshot files symlinked to content-addressed blobs), from tiny random Llama models (grouped-query attention,
8 query / 2 key-value heads) saved in the test. Nothing is downloaded: ``HF_HUB_OFFLINE`` is on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from headmap.main import create_app
from headmap.models import resolve
from headmap.models.registry import ModelRegistry
from headmap.models.resolve import ModelSpec, SpecError, parse_entries, parse_entry, parse_spec
from headmap.settings import Settings
from tests.conftest import wait_ready

REPO = "tiny-org/tiny-llama"
COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40
TEXT = "The cat sat on the mat because it was tired."


def make_llama(folder: Path, layers: int) -> Path:
    """A tiny LlamaForCausalLM with GQA (8 query heads sharing 2 key/value heads) and a byte-level BPE."""
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import _byte_level_bpe

    folder.mkdir(parents=True)
    vocab, merges = _byte_level_bpe(["<|endoftext|>"])
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=64)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(layers)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def add_to_cache(cache: Path, repo_id: str, commit: str, files: Path, refs: list[str]) -> Path:
    """Put ``files`` into ``cache`` as huggingface_hub does: blobs by content hash, a snapshot of symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for path in sorted(files.iterdir()):
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snap / path.name).symlink_to(Path("..", "..", "blobs", blob))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snap


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache with tiny-org/tiny-llama: `main` is a 2-layer model, tag `v1` a 3-layer one."""
    root = tmp_path_factory.mktemp("hf")
    cache = root / "hub"
    add_to_cache(cache, REPO, COMMIT_MAIN, make_llama(root / "two", layers=2), ["main"])
    add_to_cache(cache, REPO, COMMIT_V1, make_llama(root / "three", layers=3), ["v1"])
    remote = cache / "models--tiny-org--remote-code"  # a model whose class lives in its repository
    snap = remote / "snapshots" / COMMIT_MAIN
    snap.mkdir(parents=True)
    (remote / "refs").mkdir()
    (remote / "refs" / "main").write_text(COMMIT_MAIN)
    (snap / "config.json").write_text(
        json.dumps({"model_type": "my-own-arch", "auto_map": {"AutoModel": "modeling_mine.MyModel"}})
    )
    return cache


@pytest.fixture(scope="module")
def offline_cache(hf_cache: Path) -> Iterator[Path]:
    """Point huggingface_hub at the temp cache with downloads off (what HF_HUB_CACHE / HF_HUB_OFFLINE set)."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield hf_cache


MODELS = (
    f"llama={REPO},llama-v1={REPO}@v1,llama-commit={REPO}@{COMMIT_V1},"
    f"llama-bf16={REPO}?dtype=bfloat16&max_tokens=16,gone=nobody/not-cached,"
    "remote=tiny-org/remote-code,bad=tiny-org/tiny-llama?dtype=float8"
)


@pytest.fixture(scope="module")
def hub_client(offline_cache: Path) -> Iterator[TestClient]:
    app = create_app(Settings(builtin_models="", models=MODELS, default_model="llama"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def _models(client: TestClient) -> dict[str, dict[str, object]]:
    return {m["name"]: m for m in client.get("/api/models").json()["models"]}


# -- spec parsing -------------------------------------------------------------------------------------


def test_spec_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_spec("q", "Qwen/Qwen2.5-0.5B") == ModelSpec(
        name="q", text="Qwen/Qwen2.5-0.5B", repo_id="Qwen/Qwen2.5-0.5B"
    )
    spec = parse_spec("q", "Qwen/Qwen2.5-0.5B@refs/pr/1?dtype=bfloat16&max_tokens=1024")
    assert (spec.repo_id, spec.revision, spec.dtype, spec.max_tokens) == (
        "Qwen/Qwen2.5-0.5B",
        "refs/pr/1",
        "bfloat16",
        1024,
    )
    assert parse_spec("b", "bert-base-chinese").repo_id == "bert-base-chinese"  # a hub id without organisation
    assert parse_spec("f", "/models/not-there").folder == Path("/models/not-there")  # path-like: a folder
    assert parse_spec("f", str(tmp_path)).folder == tmp_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert parse_spec("f", "org/name").folder == Path("org/name")  # an existing folder wins over a hub id


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("x=Qwen/Qwen2.5-0.5B?dtype=float8", "dtype 'float8' is not one of float32, bfloat16"),
        ("x=Qwen/Qwen2.5-0.5B?max_tokens=1", "max_tokens '1' is not a whole number >= 2"),
        ("x=Qwen/Qwen2.5-0.5B?max_tokens=many", "max_tokens 'many'"),
        ("x=Qwen/Qwen2.5-0.5B?precision=bf16", "unknown option 'precision'"),
        ("x=Qwen/Qwen2.5-0.5B?dtype=float32&dtype=bfloat16", "option 'dtype' given twice"),
        ("x=Qwen/Qwen2.5-0.5B?dtype", "not of the form key=value"),
        ("x=Qwen/Qwen2.5-0.5B@", "nothing after '@'"),
        ("x=a/b/c", "neither an existing folder nor a Hugging Face hub id"),
        ("x=", "not of the form name=folder"),
        ("Qwen/Qwen2.5-0.5B", "not of the form name=folder"),
        ("a/b=Qwen/Qwen2.5-0.5B", "may not contain"),
    ],
)
def test_bad_specs(entry: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_entry(entry)


def test_bad_entries_are_reported_by_name_and_the_rest_parse() -> None:
    specs, errors = parse_entries("ok=org/model, bad=org/model?dtype=int8 ,junk")
    assert list(specs) == ["ok"] and set(errors) == {"bad", "junk"}


# -- loading by hub id, offline -------------------------------------------------------------------------


def test_ready_lists_what_could_not_load(hub_client: TestClient) -> None:
    body = hub_client.get("/readyz").json()
    assert body["ready"] is True
    assert set(body["models"]) == {"llama", "llama-v1", "llama-commit", "llama-bf16"}
    assert set(body["failed"]) == {"gone", "remote", "bad"}
    assert "not in the Hugging Face cache" in body["failed"]["gone"] and "HF_HUB_OFFLINE" in body["failed"]["gone"]
    assert "headmap models pull nobody/not-cached" in body["failed"]["gone"]
    assert "trust_remote_code" in body["failed"]["remote"]
    assert "dtype 'float8'" in body["failed"]["bad"]


def test_request_to_a_failed_model_is_a_clear_404(hub_client: TestClient) -> None:
    r = hub_client.post("/api/attention", json={"text": TEXT, "model": "gone"})
    assert r.status_code == 404
    assert r.json()["error"] == "model_not_found" and "HF_HUB_OFFLINE" in r.json()["detail"]
    assert hub_client.post("/api/attention", json={"text": TEXT, "model": "llama"}).status_code == 200


def _safetensors_numel(folder: Path, skip_prefix: str) -> int:
    """Parameter count read from the safetensors header (8-byte length, then JSON of shapes)."""
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return sum(
        int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__" and not k.startswith(skip_prefix)
    )


@pytest.mark.parametrize(
    ("name", "commit"), [("llama", COMMIT_MAIN), ("llama-v1", COMMIT_V1), ("llama-commit", COMMIT_V1)]
)
def test_api_models_reports_the_config(hub_client: TestClient, hf_cache: Path, name: str, commit: str) -> None:
    snap = hf_cache / "models--tiny-org--tiny-llama" / "snapshots" / commit
    config = json.loads((snap / "config.json").read_text())
    info = _models(hub_client)[name]
    assert info["family"] == config["model_type"] == "llama"
    assert info["kind"] == "decoder"
    assert info["num_layers"] == config["num_hidden_layers"]
    assert (info["num_heads"], info["num_kv_heads"]) == (config["num_attention_heads"], config["num_key_value_heads"])
    assert (info["num_heads"], info["num_kv_heads"]) == (8, 2)
    assert info["head_dim"] == config["hidden_size"] // config["num_attention_heads"]
    assert info["dtype"] == "float32"
    assert info["can_predict"] is True  # saved as LlamaForCausalLM: it has an LM head
    assert info["num_parameters"] == _safetensors_numel(snap, "lm_head.")  # the base model, without the head
    assert info["source"] == f"{REPO}@{commit}"
    assert info["max_tokens"] == 64


def test_revision_selects_the_snapshot(hub_client: TestClient) -> None:
    models = _models(hub_client)
    assert (models["llama"]["num_layers"], models["llama-v1"]["num_layers"]) == (2, 3)
    r = hub_client.post("/api/attention", json={"text": TEXT, "model": "llama-v1"})
    assert r.status_code == 200 and len(r.json()["attention"]) == 3


def test_bfloat16_option(hub_client: TestClient, hf_cache: Path) -> None:
    """dtype=bfloat16 loads bf16 weights, is reported, and its weights are transformers' own bf16 eager ones."""
    from transformers import AutoModel, AutoTokenizer

    info = _models(hub_client)["llama-bf16"]
    assert (info["dtype"], info["max_tokens"]) == ("bfloat16", 16)
    text = "The cat sat on the mat."
    r = hub_client.post("/api/attention", json={"text": text, "model": "llama-bf16"})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["attention"])  # [layers, heads, T, T]

    snap = hf_cache / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT_MAIN
    tok = AutoTokenizer.from_pretrained(snap)
    model = AutoModel.from_pretrained(snap, dtype=torch.bfloat16, attn_implementation="eager").eval()
    assert next(model.parameters()).dtype == torch.bfloat16
    with torch.inference_mode():
        out = model(**tok(text, return_tensors="pt"), output_attentions=True)
    want = torch.stack(out.attentions)[:, 0].float().numpy()  # [layers, heads, T, T]
    assert got.shape == want.shape
    # The JSON keeps 4 decimals; eager also rounds its bf16 softmax output to bf16 (8 significant bits), which
    # Headmap's capture does not (it takes softmax of the bf16 q·k in float32): one bf16 step relative.
    np.testing.assert_allclose(got, want, atol=6e-5, rtol=2**-8)
    # (that the weights really are bf16 is `info["dtype"]` above: /api/models reads it off the parameters)

    too_long = hub_client.post("/api/attention", json={"text": TEXT * 3, "model": "llama-bf16"})
    assert too_long.status_code == 413


def test_max_tokens_over_the_models_own_limit_fails(offline_cache: Path) -> None:
    reg = ModelRegistry(Settings(builtin_models="", models=f"x={REPO}?max_tokens=65", warmup=False))
    reg.load_all()
    assert reg.engines == {} and "over the model's own limit of 64" in reg.failed["x"]


# -- the registry publishes warmed-up engines in a new dict ---------------------------------------------


def test_engines_are_published_after_warm_up_in_a_new_dict(
    offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = ModelRegistry(Settings(builtin_models="", models=f"a={REPO},b={REPO}@v1"))
    seen: list[tuple[str, dict[str, object]]] = []
    warm = ModelRegistry._warm

    def spy(engine):  # type: ignore[no-untyped-def]
        seen.append((engine.name, reg.engines))  # what a route would see while this engine warms up
        warm(engine)

    monkeypatch.setattr(ModelRegistry, "_warm", staticmethod(spy))
    reg.load_all()
    assert [name for name, _ in seen] == ["a", "b"]
    (_, during_a), (_, during_b) = seen
    assert list(during_a) == [] and list(during_b) == ["a"]  # not visible while warming; the old dicts unchanged
    assert list(reg.engines) == ["a", "b"]


# -- the CLI -----------------------------------------------------------------------------------------------


def _cli(*args: str, cache: Path, offline: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1" if offline else "0"}
    return subprocess.run(
        [sys.executable, "-m", "headmap", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_pull_offline_is_a_clear_error(hf_cache: Path) -> None:
    r = _cli("models", "pull", "Qwen/Qwen2.5-0.5B", cache=hf_cache)
    assert r.returncode == 2 and "downloads are off (HF_HUB_OFFLINE" in r.stderr, r.stderr


def test_cli_pull_bad_id(hf_cache: Path) -> None:
    r = _cli("models", "pull", "Qwen/Qwen2.5-0.5B", "not/a/repo", cache=hf_cache, offline=False)
    assert r.returncode == 2 and "'not/a/repo' is neither an existing folder nor a Hugging Face hub id" in r.stderr


def test_cli_serve_bad_model_flag(hf_cache: Path) -> None:
    r = _cli("serve", "--model", "qwen=Qwen/Qwen2.5-0.5B?dtype=float8", cache=hf_cache)
    assert r.returncode == 2 and "dtype 'float8' is not one of float32, bfloat16" in r.stderr


def test_cli_serve_adds_model_flags_to_the_configured_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from headmap import cli

    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    monkeypatch.setenv("HEADMAP_MODELS", "zh=/models/bert-base-chinese")
    assert cli.main(["serve", "--model", f"llama={REPO}@v1?dtype=bfloat16", "--model", "zh=/models/other"]) == 0
    assert len(served) == 1
    specs, errors = parse_entries(os.environ["HEADMAP_MODELS"])
    assert errors == {} and specs["zh"].folder == Path("/models/other")  # the flag wins over the environment
    assert (specs["llama"].repo_id, specs["llama"].revision, specs["llama"].dtype) == (REPO, "v1", "bfloat16")


def test_cli_list_shows_the_cache(hf_cache: Path) -> None:
    r = _cli("models", "list", cache=hf_cache)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(REPO)]
    assert sorted((row[1], row[2]) for row in rows) == [(COMMIT_MAIN[:12], "main"), (COMMIT_V1[:12], "v1")]


def test_local_folder_of_a_hub_spec_uses_the_snapshot(offline_cache: Path) -> None:
    """resolve.local_folder returns the snapshot folder huggingface_hub picked for the revision."""
    spec = parse_spec("x", f"{REPO}@v1")
    assert resolve.local_folder(spec) == offline_cache / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT_V1


# -- `headmap models pull` against a stand-in hub on 127.0.0.1 ----------------------------------------------


class FakeHub:
    """The few hub routes snapshot_download uses (repo info, tree listing, resolve), serving files from memory."""

    def __init__(self, repos: dict[str, tuple[str, dict[str, bytes]]]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote, urlsplit

        self.requested: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requested.append(path)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo, action = "/".join(parts[2:4]), parts[4]
                    if repo not in repos:
                        return self._reply(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                    commit, files = repos[repo]
                    if action == "revision":
                        info = {"id": repo, "sha": commit, "siblings": [{"rfilename": f} for f in files]}
                        return self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                    if action == "tree":
                        tree = [
                            {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for f, b in files.items()
                        ]
                        return self._reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, file = "/".join(parts[:2]), "/".join(parts[4:])
                    commit, files = repos.get(repo, ("", {}))
                    if file in files:
                        body = files[file]
                        etag = f'"{hashlib.sha1(body).hexdigest()}"'
                        return self._reply(200, body, {"X-Repo-Commit": commit, "ETag": etag})
                return self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cli_pull_downloads_what_loading_needs(hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = hf_cache / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT_MAIN  # files of a real model
    files = {p.name: p.read_bytes() for p in model.iterdir()}
    with_extras = {**files, "onnx/model.onnx": b"not needed", "pytorch_model.bin": b"not needed either"}
    bin_only = {k: v for k, v in files.items() if not k.endswith(".safetensors")}
    bin_only["pytorch_model.bin"] = b"weights in the old format"
    hub = FakeHub({REPO: (COMMIT_MAIN, with_extras), "old-org/bin-only": (COMMIT_V1, bin_only)})
    cache = tmp_path / "cache"
    try:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        r = _cli("models", "pull", REPO, "old-org/bin-only", cache=cache, offline=False)
    finally:
        hub.close()
    assert r.returncode == 0, r.stderr
    snap = cache / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT_MAIN
    assert f"{REPO}: {snap}" in r.stdout
    assert (cache / "models--tiny-org--tiny-llama" / "refs" / "main").read_text() == COMMIT_MAIN
    assert {p.name: p.read_bytes() for p in snap.iterdir()} == files  # no sub-folders, no .bin next to safetensors
    old = cache / "models--old-org--bin-only" / "snapshots" / COMMIT_V1
    assert {p.name: p.read_bytes() for p in old.iterdir()} == bin_only  # .bin only when there are no safetensors

    # What was pulled then loads offline, from that cache alone.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reg = ModelRegistry(Settings(builtin_models="", models=f"x={REPO}", warmup=False))
    reg.load_all()
    assert reg.failed == {} and reg.engines["x"].num_kv_heads == 2
