"""Thread sizing from the cgroup CPU quota, on fake cgroup trees built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headmap.serving import threads as runtime
from headmap.serving.threads import (
    configure_threads,
    cpu_quota,
    plan_threads,
    usable_cpus,
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v2(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 mount seen from inside a container (cgroup namespace: own path is ``/``)."""
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/\n")
    return root, proc


@pytest.fixture
def v1(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v1 layout: one folder per controller, ``cpu`` a twin of ``cpu,cpuacct``."""
    root = tmp_path / "cgroup"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "memory").mkdir()
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "12:memory:/\n4:cpu,cpuacct:/\n1:name=systemd:/\n")
    return root, proc


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the host has 8 cores this process may run on."""
    monkeypatch.setattr(runtime, "_affinity", lambda: 8)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5), ("max 100000\n", None)],
)
def test_v2_quota(v2: tuple[Path, Path], cpu_max: str, expected: float | None) -> None:
    root, proc = v2
    write(root / "cpu.max", cpu_max)
    assert cpu_quota(root, proc) == expected


def test_v2_without_cpu_max_is_unlimited(v2: tuple[Path, Path]) -> None:
    assert cpu_quota(*v2) is None


def test_v2_tightest_limit_on_own_cgroup_or_an_ancestor(tmp_path: Path) -> None:
    """Without a cgroup namespace the host hierarchy is visible; the pod's parent may hold the limit."""
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu\n")
    pod = root / "kubepods.slice" / "pod1"
    write(pod / "cpu.max", "100000 100000\n")  # the pod: 1 CPU
    write(pod / "ctr" / "cpu.max", "max 100000\n")  # the container itself: unlimited
    write(root / "other" / "cpu.max", "10000 100000\n")  # a sibling: must be ignored
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/kubepods.slice/pod1/ctr\n")
    assert cpu_quota(root, proc) == 1.0


def test_v2_own_path_missing_under_mount_falls_back_to_mount(v2: tuple[Path, Path]) -> None:
    root, proc = v2
    write(proc, "0::/kubepods/podX/ctr\n")  # a path from the host's view; only our own cgroup is mounted
    write(root / "cpu.max", "300000 100000\n")
    assert cpu_quota(root, proc) == 3.0


@pytest.mark.parametrize("junk", ["", "garbage\n", "100000 0\n"])
def test_v2_malformed_cpu_max_is_ignored(v2: tuple[Path, Path], junk: str) -> None:
    root, proc = v2
    write(root / "cpu.max", junk)
    assert cpu_quota(root, proc) is None


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_quota(v1: tuple[Path, Path], mount: str) -> None:
    root, proc = v1
    write(root / mount / "cpu.cfs_quota_us", "250000\n")
    write(root / mount / "cpu.cfs_period_us", "100000\n")
    assert cpu_quota(root, proc) == 2.5


def test_v1_unlimited(v1: tuple[Path, Path]) -> None:
    root, proc = v1
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cpu_quota(root, proc) is None


def test_no_cgroup_at_all(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "none", tmp_path / "none-either") is None


@pytest.mark.parametrize(("cpu_max", "cpus"), [("200000 100000", 2), ("150000 100000", 2), ("20000 100000", 1)])
def test_usable_cpus_rounds_the_quota_up(v2: tuple[Path, Path], cores: None, cpu_max: str, cpus: int) -> None:
    root, proc = v2
    write(root / "cpu.max", cpu_max)
    assert usable_cpus(root, proc) == cpus


def test_usable_cpus_never_exceeds_affinity(v2: tuple[Path, Path], cores: None) -> None:
    root, proc = v2
    write(root / "cpu.max", "1600000 100000")  # 16 CPUs of quota, 8 cores
    assert usable_cpus(root, proc) == 8
    write(root / "cpu.max", "max 100000")
    assert usable_cpus(root, proc) == 8


def test_plan_prefers_headmap_threads(v2: tuple[Path, Path], cores: None) -> None:
    root, proc = v2
    write(root / "cpu.max", "200000 100000")
    assert plan_threads(6, {"OMP_NUM_THREADS": "3"}, root, proc) == (6, "HEADMAP_THREADS")


def test_plan_keeps_omp_num_threads(v2: tuple[Path, Path], cores: None) -> None:
    assert plan_threads(None, {"OMP_NUM_THREADS": "3"}, *v2) == (None, "OMP_NUM_THREADS")


def test_plan_uses_the_quota(v2: tuple[Path, Path], cores: None) -> None:
    root, proc = v2
    write(root / "cpu.max", "400000 100000")
    assert plan_threads(None, {}, root, proc)[0] == 4


@pytest.mark.parametrize(("workers", "threads"), [("2", 2), ("3", 1), ("8", 1), ("nonsense", 4), ("0", 4)])
def test_plan_shares_cpus_among_workers(v2: tuple[Path, Path], cores: None, workers: str, threads: int) -> None:
    root, proc = v2
    write(root / "cpu.max", "400000 100000")
    assert plan_threads(None, {"WEB_CONCURRENCY": workers}, root, proc)[0] == threads


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert configure_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.setattr(runtime, "usable_cpus", lambda *a: 2)
        monkeypatch.setenv("WEB_CONCURRENCY", "1")
        assert configure_threads(None) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
