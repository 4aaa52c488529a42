"""Bounded load test of the attention API over loopback: request rate held, 503 share, latency.

    python benchmarks/load.py                              # own server, 1/8/32/128 clients, 15 s each
    python benchmarks/load.py --clients 16 --duration 30   # one row
    python benchmarks/load.py --clients 4,64 --requests 200
    python benchmarks/load.py --url http://127.0.0.1:8000  # an already running server (loopback only)

Without ``--url`` it starts ``headmap serve`` (minilm and custom) on a free 127.0.0.1 port with the
default limits, or those given by ``--max-queue``/``--max-concurrency``, and stops it at the end.

Each of N clients sends one request at a time, cycling through a fixed mix of texts, models and
encodings (``MIX``), until the row's duration or request budget is spent; nothing is unbounded. A
client that gets 503 waits its ``Retry-After`` (as a well-behaved client does) unless
``--no-backoff``. Alongside, a probe process fetches ``/healthz`` every 100 ms, so the table also shows
whether the event loop stays responsive. Output: a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the harness in `tests` importable
from tests.harness import headmap_serve

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "every", "bird", "in", "the", "garden"]


def text_of(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


#: The request mix, cycled by every client: what the page and API clients typically send.
MIX: list[dict[str, Any]] = [
    {"text": text_of(10), "model": "minilm"},  # a sentence, every layer and head as JSON (~12 tokens)
    {"text": text_of(40), "model": "custom"},  # the one-layer custom block
    {"text": text_of(60), "model": "minilm", "layers": [0], "heads": [0, 1, 2]},  # one layer's heads
    {"text": text_of(120), "model": "minilm", "encoding": "compact"},  # a paragraph, compact encoding
    {"text": text_of(20), "text_pair": text_of(20), "model": "minilm", "layers": [5]},  # a sentence pair
]


@dataclass
class Row:
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of 200 answers, seconds
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # transport errors
    health: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.failures


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_row(url: str, clients: int, duration: float | None, budget: int | None, backoff: bool) -> Row:
    row = Row(clients)
    deadline = time.monotonic() + duration if duration else float("inf")
    remaining = budget

    def take() -> bool:
        """One more request, while time and budget last."""
        nonlocal remaining
        if time.monotonic() >= deadline or remaining == 0:
            return False
        if remaining is not None:
            remaining -= 1
        return True

    async def client(http: httpx.AsyncClient, index: int) -> None:
        i = index
        while take():
            body = MIX[i % len(MIX)]
            i += 1
            start = time.perf_counter()
            try:
                r = await http.post("/api/attention", json=body)
            except httpx.HTTPError:
                row.failures += 1
                continue
            elapsed = time.perf_counter() - start
            row.statuses[r.status_code] = row.statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                row.latencies.append(elapsed)
            elif r.status_code == 503 and backoff:
                await asyncio.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))

    # The /healthz probe runs in its own process: in this event loop it would also time this
    # client's own scheduling delays under hundreds of connections, not only the server's.
    probe = subprocess.Popen(
        [sys.executable, __file__, "--probe", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            start = time.monotonic()
            await asyncio.gather(*(client(http, i) for i in range(clients)))
            row.seconds = time.monotonic() - start
    finally:
        out, _ = probe.communicate("", timeout=60)  # closing its stdin stops it
    row.health = [float(x) for x in out.split()]
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| clients | requests | 200/s held | 503 share | other errors | p50 latency (200) | p99 latency (200) "
        "| /healthz p50 | /healthz p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ok = r.statuses.get(200, 0)
        other = r.sent - ok - r.statuses.get(503, 0)
        lines.append(
            f"| {r.clients} | {r.sent} | {ok / r.seconds:.1f} | {r.statuses.get(503, 0) / max(1, r.sent):.0%} "
            f"| {other} | {pct(r.latencies, 0.5) * 1000:.0f} ms | {pct(r.latencies, 0.99) * 1000:.0f} ms "
            f"| {pct(r.health, 0.5) * 1000:.1f} ms | {pct(r.health, 0.99) * 1000:.1f} ms |"
        )
    return "\n".join(lines)


def loopback_only(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"refusing to load-test {host!r}: this tool only targets 127.0.0.1 / localhost / ::1")
    return url.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="a running server on loopback; default: start one on a free port")
    p.add_argument("--clients", default="1,8,32,128", help="concurrent clients, comma-separated: one row each")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per row (default 15)")
    p.add_argument("--requests", type=int, default=None, help="request budget per row instead of a duration")
    p.add_argument("--no-backoff", action="store_true", help="retry at once after a 503 instead of waiting")
    p.add_argument("--max-queue", type=int, default=None, help="HEADMAP_MAX_QUEUE for the server it starts")
    p.add_argument("--max-concurrency", type=int, default=None, help="HEADMAP_MAX_CONCURRENCY for the server it starts")
    p.add_argument("--warmup", type=int, default=20, help="requests sent before measuring (default 20)")
    p.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # internal: the /healthz probe process
    return p


async def measure(url: str, args: argparse.Namespace) -> list[Row]:
    if args.warmup:
        await run_row(url, 2, None, args.warmup, backoff=True)
    rows = []
    for clients in (int(c) for c in args.clients.split(",")):
        duration = None if args.requests else args.duration
        row = await run_row(url, clients, duration, args.requests, backoff=not args.no_backoff)
        print(f"  {clients} clients: {row.sent} requests in {row.seconds:.1f} s", file=sys.stderr)
        rows.append(row)
    return rows


def run_probe(url: str) -> int:
    """``--probe URL``: GET /healthz every 100 ms until stdin closes; print the latencies (s), one a line."""
    import threading

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                http.get("/healthz")
                latencies.append(time.perf_counter() - start)
            except httpx.HTTPError:
                latencies.append(float("inf"))
            stop.wait(0.1)
    print("\n".join(f"{x:.6f}" for x in latencies))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:
        return run_probe(args.probe)
    if args.url:
        rows = asyncio.run(measure(loopback_only(args.url), args))
    else:
        env = {"HEADMAP_BUILTIN_MODELS": "minilm,custom"}
        if args.max_queue is not None:
            env["HEADMAP_MAX_QUEUE"] = str(args.max_queue)
        if args.max_concurrency is not None:
            env["HEADMAP_MAX_CONCURRENCY"] = str(args.max_concurrency)
        with headmap_serve(env, log_level="error") as srv:
            rows = asyncio.run(measure(srv.url, args))
    print(
        f"\nMix: {len(MIX)} request kinds cycled (benchmarks/load.py `MIX`); CPUs: {os.cpu_count()}; "
        f"{'no backoff' if args.no_backoff else 'clients wait Retry-After after a 503'}.\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
