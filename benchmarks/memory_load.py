"""Memory under a burst (issue 13): does `headmap serve` stay inside its budget, losing nothing?

    python benchmarks/memory_load.py                      # own server, 2 GiB budget, 64 clients × 512 tokens
    python benchmarks/memory_load.py --clients 8 --budget-mb 2048 --tokens 128   # a small check

Starts ``headmap serve`` on a free 127.0.0.1 port with ``HEADMAP_MEMORY_BUDGET_MB`` (the image's 2 GiB
container limit by default) and the image's other defaults, waits until it is ready, then:

1. **Burst**: ``--clients`` clients post one ``--tokens``-token JSON request each (``truncate: true``,
   minilm, every layer and head), all at once, and read their bodies to the end (counted, not kept).
2. **Runs** (only when the server has ``POST /api/runs``; skipped with a message otherwise): ``--run-clients``
   clients each open a ``--run-tokens``-token run on ``--run-model`` and fetch overviews and tiles.

Throughout, a thread samples the server's resident memory (``/proc/<pid>/statm``) every 10 ms. Output:
RSS at rest, peak and after the burst, each phase's status counts, and whether the target holds (peak
below ``--target-mb``, every answer 200, 204 (a DELETE) or 503, none lost to a transport error or a 5xx other than 503).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the harness in `tests` importable
from tests.harness import headmap_serve

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
WORDS = ["the", "cat", "sat", "on", "the", "mat", "because", "it", "was", "tired", "and", "the", "dog", "watched"]


def text_of(tokens: int) -> str:
    """About ``tokens`` word-piece tokens of plain English (more than enough: requests truncate)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens + 16))


class Sampler(threading.Thread):
    """RSS of ``pid`` every ``period`` s, kept as (time, bytes)."""

    def __init__(self, pid: int, period: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.statm = Path(f"/proc/{pid}/statm")
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def rss(self) -> int:
        return int(self.statm.read_text().split()[1]) * PAGE

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.samples.append((time.monotonic(), self.rss()))
            except (OSError, ValueError, IndexError):
                return
            time.sleep(self.period)

    def peak(self, since: float = 0.0) -> int:
        return max((b for t, b in self.samples if t >= since), default=0)


@dataclass
class Phase:
    name: str
    statuses: Counter[int] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # transport errors, truncated bodies
    retry_after_missing: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    def ok(self) -> bool:
        # 204: a run's DELETE; 503 (with Retry-After): refused while the budget is full, nothing lost
        return not self.lost and not self.retry_after_missing and set(self.statuses) <= {200, 204, 503}

    def line(self) -> str:
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        extra = f"; lost {len(self.lost)} ({self.lost[0]})" if self.lost else ""
        missing = f"; {self.retry_after_missing} 503 without Retry-After" if self.retry_after_missing else ""
        return f"{self.name}: {counts} in {self.seconds:.1f} s, {self.bytes_read / MIB:.0f} MiB read{extra}{missing}"


async def fetch(client: httpx.AsyncClient, phase: Phase, method: str, url: str, **kw: Any) -> bytes | None:
    """One request, body read to its end; the body is returned only when small (JSON to look into)."""
    try:
        async with client.stream(method, url, **kw) as r:
            size, small = 0, bytearray()
            async for chunk in r.aiter_raw():
                size += len(chunk)
                if size <= MIB:
                    small += chunk
            declared = r.headers.get("content-length")
            if declared is not None and int(declared) != size:
                phase.lost.append(f"{url}: {size} of {declared} bytes")
                return None
            phase.statuses[r.status_code] += 1
            phase.bytes_read += size
            if r.status_code == 503 and "retry-after" not in r.headers:
                phase.retry_after_missing += 1
            return bytes(small) if r.status_code == 200 and size <= MIB else None
    except httpx.HTTPError as exc:
        phase.lost.append(f"{url}: {type(exc).__name__}: {exc}")
        return None


async def burst(url: str, clients: int, tokens: int, model: str, timeout: float) -> Phase:
    phase = Phase(f"burst: {clients} clients x {tokens}-token JSON")
    body = {"text": text_of(tokens), "model": model, "truncate": True, "encoding": "json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(fetch(client, phase, "POST", "/api/attention", json=body) for _ in range(clients)))
    phase.seconds = time.monotonic() - start
    return phase


async def has_runs(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        paths = (await client.get("/openapi.json")).json().get("paths", {})
    return "/api/runs" in paths


async def runs(url: str, clients: int, tokens: int, model: str | None, tiles: int, timeout: float) -> Phase:
    """Each client opens a run (RUNS_API.md contract), reads two overviews and ``tiles`` 256 × 256 tiles."""
    import json

    phase = Phase(f"runs: {clients} clients x {tokens}-token runs")
    body: dict[str, Any] = {"text": text_of(tokens), "truncate": True}
    if model:
        body["model"] = model

    async def one(client: httpx.AsyncClient, k: int) -> None:
        raw = await fetch(client, phase, "POST", "/api/runs", json=body)
        if raw is None:
            return
        info = json.loads(raw)
        rid, n = info["run_id"], int(info["num_tokens"])
        for layer, head in ((0, 0), (info["num_layers"] - 1, "mean")):
            await fetch(client, phase, "GET", f"/api/runs/{rid}/overview", params={"layer": layer, "head": head})
        for i in range(tiles):
            q0 = (i * 997 + k * 131) % max(1, n - 256)
            params = {"layer": 0, "head": 0, "q0": q0, "q1": min(n, q0 + 256), "k0": 0, "k1": min(n, 256)}
            await fetch(client, phase, "GET", f"/api/runs/{rid}/tile", params=params)
        await fetch(client, phase, "DELETE", f"/api/runs/{rid}")

    start = time.monotonic()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(one(client, k) for k in range(clients)))
    phase.seconds = time.monotonic() - start
    return phase


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-mb", type=int, default=2048, help="HEADMAP_MEMORY_BUDGET_MB (the image's limit)")
    ap.add_argument("--target-mb", type=float, default=1.6 * 1024, help="peak RSS the run must stay under")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--run-clients", type=int, default=16)
    ap.add_argument("--run-tokens", type=int, default=8192)
    ap.add_argument("--run-model", default=None, help="a model taking --run-tokens (e.g. a tiny one in HEADMAP_MODELS)")
    ap.add_argument("--tiles", type=int, default=4, help="tiles each run client fetches")
    ap.add_argument("--timeout", type=float, default=300, help="client timeout per request, s")
    ap.add_argument("--server-log", default="/tmp/headmap_memory_load.log", help="the server's output")
    ap.add_argument("--env", action="append", default=[], help="extra server environment, NAME=VALUE (repeatable)")
    args = ap.parse_args()

    env = {"HEADMAP_MEMORY_BUDGET_MB": str(args.budget_mb), "HEADMAP_LOAD_IN_BACKGROUND": "false"}
    env.update(item.split("=", 1) for item in args.env)  # type: ignore[arg-type]
    phases: list[Phase] = []
    with headmap_serve(env, log_level="info", log=Path(args.server_log)) as server:
        sampler = Sampler(server.proc.pid)
        rest = sampler.rss()
        sampler.start()
        t0 = time.monotonic()
        phases.append(asyncio.run(burst(server.url, args.clients, args.tokens, args.model, args.timeout)))
        burst_peak = sampler.peak(t0)
        time.sleep(3)  # idle: the server trims its allocator once nothing is held
        after = sampler.rss()
        if asyncio.run(has_runs(server.url)):
            t1 = time.monotonic()
            run_args = (args.run_clients, args.run_tokens, args.run_model, args.tiles, args.timeout)
            phases.append(asyncio.run(runs(server.url, *run_args)))
            print(f"runs phase peak RSS {sampler.peak(t1) / MIB:.0f} MiB")
        else:
            print("runs phase skipped: this server has no POST /api/runs yet")
        sampler.stopping.set()
        sampler.join()
        peak = sampler.peak()
    print(
        f"server RSS: at rest {rest / MIB:.0f} MiB, burst peak {burst_peak / MIB:.0f} MiB, 3 s after the burst "
        f"{after / MIB:.0f} MiB, overall peak {peak / MIB:.0f} MiB (budget {args.budget_mb} MiB, target < "
        f"{args.target_mb:.0f} MiB; {len(sampler.samples)} samples)"
    )
    for phase in phases:
        print(phase.line())
    ok = peak < args.target_mb * MIB and all(p.ok() for p in phases)
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
