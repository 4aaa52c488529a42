"""Long inputs: a run's memory, its first overview and a tile, against the SDPA forward and eager attention.

    python benchmarks/long.py                       # 1k, 2k, 4k and 8k tokens, median of 3 (needs a quiet machine)
    python benchmarks/long.py --tokens 256 512 --reps 1 --eager-max-gb 1      # a quick check that it works

A random Llama-style model (8 layers, 8 query heads on 2 key/value heads, head size 64, hidden 512, MLP 1376, a
1024-token vocabulary) is built in this process; nothing is downloaded. Per length, on random token ids:

- held: what a run keeps (``Run.nbytes``: each layer's post-RoPE queries and keys) and bytes per token;
- SDPA forward: the model's plain SDPA forward pass (no capture), the floor any attention view pays;
- first overview: the forward with the capture (what ``POST /api/runs`` runs) plus the first overview
  (layer 0, head 0, 256 x 256, max, written as JSON), and its ratio to the SDPA forward;
- tile: a 256 x 256 tile of one head in the middle of the input, computed and written as JSON (the route's
  server time without HTTP);
- eager: transformers' eager forward with ``output_attentions`` (time, and peak resident memory over the
  baseline, from ``VmHWM`` reset through ``/proc/self/clear_refs``), or the memory it would need when that is
  more than ``--eager-max-gb`` or the memory available (it would be killed).

Medians over repetitions; a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from headmap.models import capture
from headmap.serving import runs
from headmap.serving.encoding import Weights, dumps

LAYERS, HEADS, KV_HEADS, HEAD_DIM = 8, 8, 2, 64
GEOMETRY = {
    "hidden_size": HEADS * HEAD_DIM,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "intermediate_size": 1376,
    "num_hidden_layers": LAYERS,
    "vocab_size": 1024,
}
TILE = 256
MB = 1024 * 1024


def build(max_tokens: int) -> Any:
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(**GEOMETRY, max_position_embeddings=max_tokens, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaModel(config).eval()


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_of(fn: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak resident bytes over the resident size before) of one call."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    base = _status("VmRSS")
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") - base
    del out
    return seconds, peak


def median(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tile_time(run: runs.Run, tokens: int, reps: int) -> float:
    """Median seconds of a 256 x 256 tile in the middle of the input, computed and written as JSON."""
    mid = max(0, tokens // 2 - TILE // 2)
    side = min(TILE, tokens)

    def tile() -> object:
        w = runs.tile(run, LAYERS // 2, 1, mid, mid + side, mid // 2, mid // 2 + side)  # [side, side]
        return dumps({"weights": Weights(w)})

    tile()  # warm-up
    return median(tile, reps)


def measure(model: Any, tokens: int, reps: int, eager_max: int) -> dict[str, Any]:
    ids = torch.randint(0, model.config.vocab_size, (1, tokens))  # (1, T)
    mask = torch.ones_like(ids)  # (1, T)
    store = runs.RunStore(1 << 40, 3600.0)

    def sdpa() -> object:
        model.set_attn_implementation("sdpa")
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def open_run() -> runs.Run:
        model.set_attn_implementation(capture.CAPTURE)
        with capture.recording() as rec:
            model(input_ids=ids, attention_mask=mask)
        return store.add("bench", rec.split([tokens])[0], KV_HEADS)

    def first_overview() -> object:
        run = open_run()
        _, _, matrix = runs.overview(run, 0, 0, 256, "max")
        return dumps({"matrix": Weights(matrix)})

    capture.register()
    out: dict[str, Any] = {}
    with torch.inference_mode():
        sdpa()  # warm-up
        out["sdpa_s"] = median(sdpa, reps)
        out["overview_s"] = median(first_overview, reps)
        run = open_run()
        out["bytes"] = run.nbytes
        out["tile_s"] = tile_time(run, tokens, max(reps, 5))
        for run_id in store.ids():  # let the runs go before eager attention needs the memory
            store.delete(run_id)
        del run
        eager_need = (LAYERS + 3) * HEADS * tokens * tokens * 4  # the L attentions kept, plus one layer's temporaries
        out["eager_need"] = eager_need
        if eager_need > min(eager_max, int(available_bytes() * 0.8)):
            out["eager"] = None
        else:
            model.set_attn_implementation("eager")
            out["eager"] = peak_of(
                lambda: model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
            )  # L x (1, H, T, T)
            model.set_attn_implementation("sdpa")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--eager-max-gb", type=float, default=6.0, help="skip eager when it would need more")
    args = parser.parse_args(argv)
    model = build(max(args.tokens))
    print(
        f"Random Llama, {LAYERS} layers, {HEADS} query / {KV_HEADS} key-value heads, head size {HEAD_DIM}; torch "
        f"threads {torch.get_num_threads()}; median of {args.reps}\n"
    )
    print(
        "| tokens | run holds | SDPA forward | capture forward + first overview | 256 × 256 tile "
        "| eager `output_attentions` |"
    )
    print("|---:|---|---:|---|---:|---|")
    for tokens in args.tokens:
        m = measure(model, tokens, args.reps, int(args.eager_max_gb * 1024**3))
        if m["eager"] is None:
            eager = f"not run: needs ≈ {m['eager_need'] / 1024**3:.1f} GB, over --eager-max-gb or the memory available"
        else:
            seconds, peak = m["eager"]
            eager = f"{seconds * 1000:.0f} ms, peak +{peak / MB:.0f} MB"
        print(
            f"| {tokens} | {m['bytes'] / MB:.1f} MB ({m['bytes'] / tokens:.0f} B/token) | {m['sdpa_s'] * 1000:.0f} ms "
            f"| {m['overview_s'] * 1000:.0f} ms = {m['overview_s'] / m['sdpa_s']:.2f}× "
            f"| {m['tile_s'] * 1000:.1f} ms | {eager} |"
        )


if __name__ == "__main__":
    main()
