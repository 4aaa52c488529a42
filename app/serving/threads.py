"""Process-level tuning: torch thread count sized to the CPUs this process may really use, and the
memory limit the byte budget (``serving.memory``) defaults from.

``os.cpu_count()`` is the host's core count. In a container limited to 2 CPUs on a 64-core host, 64
intra-op threads burn the CFS quota in a few milliseconds and then sit throttled for the rest of
each period, so every forward pass stalls. The limit lives in the cgroup: ``cpu.max`` (v2) or
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1), on the process's own cgroup or any ancestor.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

log = logging.getLogger("headmap")
T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _own_cgroups(proc_self_cgroup: Path) -> dict[str, str]:
    """``{controllers: path}`` from ``/proc/self/cgroup`` (``"0::/x"`` gives ``{"": "/x"}`` on v2)."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def _candidate_dirs(mount: Path, own: str | None) -> Iterator[Path]:
    """The process's cgroup folder under ``mount`` and each ancestor up to ``mount``, then ``mount`` itself.

    With a cgroup namespace (the container default) the own path is ``/`` and this is just ``mount``.
    Without one, the host's hierarchy is visible and the limit may sit on the pod's parent cgroup.
    """
    if own and own != "/":
        rel = Path(own.lstrip("/"))
        for part in (rel, *rel.parents):
            if part != Path("."):
                yield mount / part
    yield mount


def _read_v2(folder: Path) -> float | None:
    quota, period = (folder / "cpu.max").read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _read_v1(folder: Path) -> float | None:
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    period = int((folder / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs allowed by the tightest cgroup CPU quota on this process, or None when unlimited.

    Reads v2 ``cpu.max`` (unified hierarchy) or, failing that, v1 ``cpu.cfs_quota_us`` under the
    ``cpu`` or ``cpu,cpuacct`` mount; a fraction such as 1.5 means one and a half CPUs.
    """
    own = _own_cgroups(proc_self_cgroup)
    found: list[float] = []
    if (cgroup_root / "cgroup.controllers").exists() or (cgroup_root / "cpu.max").exists():
        mounts = [(cgroup_root, own.get(""), _read_v2)]
    else:
        v1_path = next((path for ctrl, path in own.items() if "cpu" in ctrl.split(",")), None)
        mounts = [(cgroup_root / name, v1_path, _read_v1) for name in ("cpu", "cpu,cpuacct")]
    seen: set[Path] = set()
    for mount, path, read in mounts:
        for folder in _candidate_dirs(mount, path):
            if folder in seen:
                continue
            seen.add(folder)
            try:
                quota = read(folder)
            except (OSError, ValueError, IndexError, ZeroDivisionError):
                continue
            if quota is not None:
                found.append(quota)
    return min(found) if found else None


def _read_memory_v2(folder: Path) -> int | None:
    value = (folder / "memory.max").read_text().strip()
    return None if value == "max" else int(value)


#: cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value; anything this big is none.
_V1_UNLIMITED = 1 << 60


def _read_memory_v1(folder: Path) -> int | None:
    value = int((folder / "memory.limit_in_bytes").read_text().strip())
    return None if value <= 0 or value >= _V1_UNLIMITED else value


def memory_limit(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """Bytes allowed by the tightest cgroup memory limit on this process, or None when unlimited.

    v2 ``memory.max`` (``max`` is no limit) on the unified hierarchy, else v1 ``memory.limit_in_bytes``
    under the ``memory`` mount; the process's own cgroup and its ancestors, like ``cpu_quota``.
    """
    own = _own_cgroups(proc_self_cgroup)
    if (cgroup_root / "cgroup.controllers").exists() or (cgroup_root / "memory.max").exists():
        mount, path, read = cgroup_root, own.get(""), _read_memory_v2
    else:
        v1_path = next((p for ctrl, p in own.items() if "memory" in ctrl.split(",")), None)
        mount, path, read = cgroup_root / "memory", v1_path, _read_memory_v1
    found: list[int] = []
    for folder in _candidate_dirs(mount, path):
        try:
            limit = read(folder)
        except (OSError, ValueError):
            continue
        if limit is not None:
            found.append(limit)
    return min(found) if found else None


def physical_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """min(CPU affinity, cgroup quota rounded up), at least 1.

    Rounded up: with a 1.5-CPU quota two threads run 1.5 CPUs' worth per period (briefly throttled),
    where one thread would leave half a CPU idle.
    """
    cpus = _affinity()
    quota = cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _workers(env: Mapping[str, str]) -> int:
    try:
        return max(1, int(env.get("WEB_CONCURRENCY", "1")))
    except ValueError:
        return 1


def workers_sharing(env: Mapping[str, str] | None = None) -> int:
    """Worker processes of this server on the machine (``WEB_CONCURRENCY``), at least 1."""
    return _workers(os.environ if env is None else env)


def plan_threads(
    requested: int | None,
    env: Mapping[str, str] | None = None,
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
) -> tuple[int | None, str]:
    """The intra-op thread count to set (None: keep torch's own) and why, without touching torch.

    Order: ``requested`` (``HEADMAP_THREADS``); else ``OMP_NUM_THREADS`` if set, which torch already
    applied; else the usable CPUs shared among the ``WEB_CONCURRENCY`` worker processes of the
    machine, so N workers together use the quota rather than N times it.
    """
    env = os.environ if env is None else env
    if requested:
        return requested, "HEADMAP_THREADS"
    if env.get("OMP_NUM_THREADS", "").strip():
        return None, "OMP_NUM_THREADS"
    cpus = usable_cpus(cgroup_root, proc_self_cgroup)
    workers = _workers(env)
    if workers == 1:
        return cpus, f"{cpus} usable CPUs"
    return max(1, cpus // workers), f"{cpus} usable CPUs / {workers} workers (WEB_CONCURRENCY)"


def configure_threads(requested: int | None) -> int:
    """Set torch's intra-op threads per :func:`plan_threads`; returns the number in effect."""
    threads, why = plan_threads(requested)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    log.info("torch intra-op threads: %d (%s)", threads, why)
    return threads


# -- one thread for all of the server's torch work --------------------------------------------------
#
# Each Python thread that runs a parallel torch op gets its own OpenMP team (libgomp), and the teams'
# idle threads stay. Once the threads libgomp manages outnumber the CPUs, it stops spin-waiting between
# parallel regions and puts its threads to sleep on a futex instead, so every one of the forward pass's
# hundreds of regions pays a wake-up: measured on 2 CPUs, the server's forward pass took 1.5-1.8x the
# wall time of the same pass in a one-team client at the same CPU time (issue 19). Running every model
# forward, weight computation and encoding on one thread keeps one team, sized to the CPUs.

_TORCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headmap-torch")


async def in_torch_thread(fn: Callable[[], T]) -> T:
    """Run blocking torch work ``fn`` on the server's one torch thread (FIFO with all other such work)."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_TORCH, ctx.run, fn)


def torch_thread_ident() -> int:
    """The torch thread's id (it is started if it was not): for tests."""
    return _TORCH.submit(threading.get_ident).result()
