"""What every end-to-end test and benchmark starts: a real ``headmap serve`` on loopback, and Chromium.

One place for both, so the benchmarks measure the server the tests check, and every browser is
launched from Debian's Chromium with the same flags (never a downloaded browser).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = os.environ.get("HEADMAP_CHROMIUM", "/usr/bin/chromium")
#: Headless in a container: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    url: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen[bytes]
    ready_s: float  # from spawning the process to /readyz 200
    log: Path | None  # stdout and stderr, when asked for


@contextmanager
def headmap_serve(
    env: dict[str, str] | None = None, *, log: Path | None = None, log_level: str = "warning", timeout: float = 180
) -> Iterator[LocalServer]:
    """``headmap serve`` on a free 127.0.0.1 port, yielded once ``/readyz`` is 200; stopped afterwards.

    ``env`` is added to this process's environment. With ``log``, the server's output goes to that
    file; otherwise stdout is dropped and stderr (errors) stays on this process's stderr.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out: IO[bytes] | int = log.open("wb") if log else subprocess.DEVNULL
    start = time.perf_counter()
    try:
        command = ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
        proc = subprocess.Popen(
            [sys.executable, "-m", "headmap", *command],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=out if log else None,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]  # the child has its own copy
    try:
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log else ""
                raise RuntimeError(f"headmap serve exited with {proc.returncode}\n{tail}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"headmap serve was not ready within {timeout:g} s")
            time.sleep(0.05)
        yield LocalServer(url, proc, time.perf_counter() - start, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
