"""Attention capture against transformers' eager ``output_attentions``, in one run.

    python benchmarks/capture.py                      # 512 and 2048 tokens, 4 layers, 5 repetitions
    python benchmarks/capture.py --quick              # 2 layers, 2 repetitions
    python benchmarks/capture.py --tokens 512 --layers 2

A random Qwen2 model with Qwen2.5-0.5B's attention geometry (14 query heads, 2 key/value heads, head
size 64, hidden 896, MLP 4864; fewer layers, a small vocabulary) is built in this process, nothing is
downloaded. One model object is switched between ``eager``, ``sdpa`` and the capture. Per length:

- held bytes: a captured request (``Captured.nbytes``: q, k, mask) vs eager's attention tensors;
- one layer: capture forward (which, as in the server, stops after the last layer's queries and keys)
  + that layer's weights (all heads) vs the SDPA forward alone;
- everything: capture forward + all layers and heads + the compact encoding vs the eager forward
  with ``output_attentions`` (which does not even encode).

Medians over repetitions; a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from headmap.models import capture
from headmap.serving.encoding import CompactWeights

#: Qwen2.5-0.5B's attention geometry.
GEOMETRY = {
    "hidden_size": 896,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
}


def build(layers: int, max_tokens: int) -> Any:
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(
        **GEOMETRY,
        vocab_size=1024,
        num_hidden_layers=layers,
        max_position_embeddings=max_tokens,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return Qwen2Model(config).eval()


def median_times(fns: dict[str, tuple[str, Callable[[], object]]], model: Any, reps: int) -> dict[str, float]:
    """Median seconds of each ``name: (attn_implementation, fn)``, run round-robin so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(reps + 1):  # the first round warms up (allocator, kernels) and is dropped
        for name, (impl, fn) in fns.items():
            model.set_attn_implementation(impl)
            gc.collect()
            start = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(model: Any, tokens: int, reps: int) -> dict[str, float]:
    ids = torch.randint(0, model.config.vocab_size, (1, tokens))  # (1, T)
    mask = torch.ones_like(ids)  # (1, T)
    layers = model.config.num_hidden_layers

    def eager() -> object:
        return model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions  # L x (1, H, T, T)

    def sdpa() -> object:
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def captured() -> capture.Captured:  # as the server runs it: stops after the last layer's queries and keys
        rec = capture.capture_only(model, {"input_ids": ids, "attention_mask": mask}, layers)
        return rec.split([tokens])[0]

    def one_layer() -> torch.Tensor:
        return captured().weights(layers // 2)  # [H, T, T]

    def everything() -> CompactWeights:
        state = captured()
        return CompactWeights(state.select(list(range(layers)), list(range(state.num_heads))))  # [L, H, T, T]

    capture.register()
    with torch.inference_mode():
        model.set_attn_implementation("eager")
        out = {"eager_bytes": float(sum(a.nbytes for a in eager()))}  # type: ignore[attr-defined]
        model.set_attn_implementation(capture.CAPTURE)
        out["captured_bytes"] = float(captured().nbytes)
        fns = {
            "eager_s": ("eager", eager),
            "sdpa_s": ("sdpa", sdpa),
            "one_layer_s": (capture.CAPTURE, one_layer),
            "everything_s": (capture.CAPTURE, everything),
        }
        out.update(median_times(fns, model, reps))
        model.set_attn_implementation("eager")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--layers", type=int, default=None, help="default 4 (2 with --quick)")
    parser.add_argument("--reps", type=int, default=None, help="default 5 (2 with --quick)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    layers = args.layers or (2 if args.quick else 4)
    reps = args.reps or (2 if args.quick else 5)
    model = build(layers, max(args.tokens))
    print(f"Random Qwen2, {layers} layers, 14 query / 2 key-value heads, head size 64; torch threads "
          f"{torch.get_num_threads()}, median of {reps}\n")  # fmt: skip
    print("| tokens | held: captured / eager | one layer (capture) / SDPA forward | all, compact / eager forward |")
    print("|---:|---|---|---|")
    for tokens in args.tokens:
        m = measure(model, tokens, reps)
        mb = 1024 * 1024
        one, everything = m["one_layer_s"] / m["sdpa_s"], m["everything_s"] / m["eager_s"]
        print(
            f"| {tokens} "
            f"| {m['captured_bytes'] / mb:.1f} MB / {m['eager_bytes'] / mb:.0f} MB "
            f"= {m['captured_bytes'] / m['eager_bytes']:.1%} "
            f"| {m['one_layer_s'] * 1000:.0f} / {m['sdpa_s'] * 1000:.0f} ms = {one:.2f}× "
            f"| {m['everything_s'] * 1000:.0f} / {m['eager_s'] * 1000:.0f} ms = {everything:.2f}× |"
        )


if __name__ == "__main__":
    main()
