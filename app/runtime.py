"""Process-level tuning: torch thread count sized to the CPUs this process may really use."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None when unlimited."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """min(CPU affinity, cgroup quota rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def configure_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to ``requested`` or the usable CPUs; returns the number set."""
    threads = requested or usable_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
