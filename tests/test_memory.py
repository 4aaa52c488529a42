"""Serving inside a memory budget (issue 13): byte accounting, the response-size budget, streamed bodies,
the cgroup memory limit. No wall-clock assertions: waits are observed through the pool's own state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from headmap.models.engine import Encoded, Engine
from headmap.models.registry import ModelRegistry
from headmap.schemas.attention import AttentionRequest
from headmap.serving import attention as service
from headmap.serving import memory
from headmap.serving.memory import BytePool, Hold, TooBig
from headmap.serving.scheduler import Scheduler
from headmap.serving.threads import memory_limit
from headmap.settings import Settings
from tests.test_reliability import borrowed, is_error

MIB = 1 << 20
TEXT = "The cat sat on the mat because it was tired."


# -- the reservation's size, by hand ----------------------------------------------------------------


def test_reservation_of_a_streamed_512_token_minilm_request() -> None:
    """minilm (6 layers × 12 heads, head size 32), 512 tokens, captured, every head as JSON (streamed).

    Forward: kept q and k 6·2·12·512·32 = 2,359,296 floats; one layer's transient 3·12·512² = 9,437,184;
    activations 16·512·12·32 = 3,145,728; × 4 bytes = 59,768,832. The body (6·12·512²·7 = 132 MB) is over
    16 MiB, so streamed: one layer of 12 heads at a time, 12·512²·(4 + 7) = 34,603,008. Sum 94,371,840.
    """
    got = memory.attention_bytes(num_layers=6, num_heads=12, head_dim=32, num_tokens=512, captured=True,
                                 layers=6, heads=12, encoding="json")  # fmt: skip
    assert got == 59_768_832 + 34_603_008 == 94_371_840


def test_reservation_of_a_small_dense_compact_request() -> None:
    """A dense (eager) 2-layer × 4-head model, head size 8, 10 tokens, 1 layer × 2 heads asked, compact.

    Forward: every layer's weights 2·4·100 = 800 floats, transient 3·4·100 = 1,200, activations 16·10·4·8 =
    5,120; × 4 = 28,480. Body 1·2·100·4/3 = 266 bytes (≤ 16 MiB: built whole): the asked weights as float32
    plus their levels and base64, 1·2·100·(4 + 1 + 4/3) = 1,266.67. Sum 29,746 (truncated to an int).
    """
    got = memory.attention_bytes(num_layers=2, num_heads=4, head_dim=8, num_tokens=10, captured=False,
                                 layers=1, heads=2, encoding="compact")  # fmt: skip
    assert got == 29_746


def test_the_route_reserves_peak_bytes_of_its_request(registry: ModelRegistry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What `/api/attention` takes from the pool is `peak_bytes` of its engine, tokens and selection."""
    taken: list[int] = []
    real = Hold.add

    def spy(self: Hold, nbytes: int) -> None:
        taken.append(nbytes)
        real(self, nbytes)

    monkeypatch.setattr(Hold, "add", spy)
    engine = registry.get("minilm")
    t = len(engine.encode(TEXT))
    with borrowed(registry) as c:
        r = c.post("/api/attention", json={"text": TEXT, "model": "minilm", "layers": [1, 4], "heads": [0]})
        assert r.status_code == 200
        assert c.app.state.scheduler.memory.used == 0  # type: ignore[attr-defined]  # given back after the response
    expected = memory.attention_bytes(num_layers=6, num_heads=12, head_dim=32, num_tokens=t, captured=True,
                                      layers=2, heads=1, encoding="json")  # fmt: skip
    assert taken == [expected]


# -- the pool ---------------------------------------------------------------------------------------


async def _spin(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_pool_is_first_come_first_served_and_never_over_capacity() -> None:
    async def main() -> None:
        pool = BytePool(100)
        await pool.acquire(60)
        big = asyncio.create_task(pool.acquire(50))  # does not fit: waits
        small = asyncio.create_task(pool.acquire(10))  # would fit, but waits behind the big one
        await _spin()
        assert not big.done() and not small.done() and pool.used == 60 and pool.waiting == 2
        pool.release(60)
        await _spin()
        assert big.done() and small.done() and pool.used == 60
        with pytest.raises(TooBig):
            await pool.acquire(101)

    asyncio.run(main())


def test_cancelled_waiter_leaves_no_trace() -> None:
    async def main() -> None:
        pool = BytePool(100)
        await pool.acquire(90)
        first = asyncio.create_task(pool.acquire(50))
        second = asyncio.create_task(pool.acquire(10))
        await _spin()
        first.cancel()  # leaving the head of the queue lets the small one through
        await _spin()
        assert first.cancelled() and second.done() and pool.used == 100 and pool.waiting == 0
        pool.release(100)
        assert pool.used == 0

    asyncio.run(main())


def test_hold_keeps_its_bytes_while_work_runs() -> None:
    async def main() -> None:
        pool = BytePool(100)
        hold = Hold(pool)
        await pool.acquire(40)
        hold.add(40)
        hold.pin()  # a forward pass still running for a request that has timed out
        hold.release()
        assert pool.used == 40
        hold.unpin()
        assert pool.used == 0
        hold.release()  # idempotent
        assert pool.used == 0

    asyncio.run(main())


class _FakeEngine(Engine):
    """An engine whose ``run`` waits for ``gate`` and then returns (or raises ``fail``)."""

    def __init__(self, gate: threading.Event, fail: Exception | None = None) -> None:
        super().__init__(name="fake", kind="custom", description="", num_layers=1, num_heads=1, max_tokens=8,
                         tokenizer=None, family="fake", num_kv_heads=1, head_dim=1, dtype="float32",
                         num_parameters=0, can_predict=False, source="test")  # fmt: skip
        self.gate, self.fail = gate, fail

    def run(self, batch: list[Encoded]) -> list[Any]:
        self.gate.wait(30)
        if self.fail is not None:
            raise self.fail
        return [torch.ones(1, 1, len(e), len(e)) for e in batch]


def _enc() -> Encoded:
    return Encoded([1, 2], None, ["a", "b"], [None, None], [False, False], [False, False], [0, 0], False)


def _scheduler(capacity: int, **settings: Any) -> Scheduler:
    scheduler = Scheduler(Settings(**settings))
    scheduler.memory.resize(capacity)
    return scheduler


def test_reservations_are_released_after_an_engine_error() -> None:
    async def main() -> None:
        gate = threading.Event()
        gate.set()
        scheduler = _scheduler(1000)
        hold = scheduler.hold()
        with pytest.raises(RuntimeError, match="boom"):
            await scheduler.run(_FakeEngine(gate, RuntimeError("boom")), _enc(), 600, hold)
        assert scheduler.memory.used == 600  # held until the response is out ...
        hold.release()
        assert scheduler.memory.used == 0 and scheduler.waiting == 0  # ... then given back
        await scheduler.close()

    asyncio.run(main())


def test_waiting_for_bytes_past_the_time_limit_is_503_without_a_leak() -> None:
    async def main() -> None:
        scheduler = _scheduler(1000, request_timeout_s=0.05)
        await scheduler.memory.acquire(1000)  # the pool is full
        hold = scheduler.hold()
        with pytest.raises(Exception) as err:
            await scheduler.run(_FakeEngine(threading.Event()), _enc(), 10, hold)
        assert getattr(err.value, "status", None) == 503  # never started: overloaded, retry later
        assert getattr(err.value, "headers", {}) == {"Retry-After": "1"}
        hold.release()
        assert scheduler.memory.used == 1000 and scheduler.memory.waiting == 0 and scheduler.waiting == 0
        scheduler.memory.release(1000)
        await scheduler.close()

    asyncio.run(main())


def test_cancelled_request_gives_its_bytes_back_when_its_forward_pass_ends() -> None:
    async def main() -> None:
        gate = threading.Event()
        scheduler = _scheduler(1000)
        hold = scheduler.hold()
        task = asyncio.create_task(scheduler.run(_FakeEngine(gate), _enc(), 300, hold))
        while scheduler.batches_run == 0 and scheduler.memory.used == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the batcher take the job into its (blocked) forward pass
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        hold.release()
        assert scheduler.memory.used == 300  # the forward pass still runs in its thread: its bytes stay taken
        gate.set()
        for _ in range(500):
            if scheduler.memory.used == 0:
                break
            await asyncio.sleep(0.01)
        assert scheduler.memory.used == 0 and scheduler.waiting == 0
        await scheduler.close()

    asyncio.run(main())


def test_call_reserves_and_releases() -> None:
    async def main() -> None:
        scheduler = _scheduler(1000)
        hold = scheduler.hold()
        assert await scheduler.call(lambda: scheduler.memory.used, 700, hold) == 700  # held while fn runs
        hold.release()
        assert scheduler.memory.used == 0
        with pytest.raises(Exception) as err:
            await scheduler.call(lambda: None, 1001, scheduler.hold())
        assert getattr(err.value, "status", None) == 413 and getattr(err.value, "error", "") == "too_large_for_memory"
        await scheduler.close()

    asyncio.run(main())


# -- over the budget, through the app -------------------------------------------------------------


@contextmanager
def _pool_full(c: TestClient) -> Iterator[BytePool]:
    scheduler = c.app.state.scheduler  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not scheduler.memory_sized:  # the app's own (empty) model load has finished and sized the pool
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pool: BytePool = scheduler.memory
    portal = c.portal  # type: ignore[attr-defined]
    capacity = 64 * MIB
    portal.call(pool.resize, capacity)
    portal.call(pool.acquire, capacity)
    try:
        yield pool
    finally:
        if pool.used >= capacity:
            portal.call(pool.release, capacity)


def test_request_over_the_budget_waits_then_the_next_gets_503(registry: ModelRegistry) -> None:
    """The pool is full: a request waits for bytes (in the queue); with the queue full the next one is 503
    `overloaded` with Retry-After; once bytes come back the waiting one is served, and nothing stays held."""
    body = {"text": TEXT, "model": "custom"}
    with borrowed(registry, max_queue=0, max_concurrency=1, max_batch_size=1) as c:
        scheduler = c.app.state.scheduler  # type: ignore[attr-defined]
        results: list[int] = []
        with _pool_full(c) as pool:
            waiter = threading.Thread(target=lambda: results.append(c.post("/api/attention", json=body).status_code))
            waiter.start()
            deadline = time.monotonic() + 30
            while pool.waiting < 1:
                assert time.monotonic() < deadline, "the request never queued for bytes"
                time.sleep(0.01)
            assert scheduler.waiting == 1
            r = c.post("/api/attention", json=body)
            assert is_error(r, 503, "overloaded") and r.headers["retry-after"] == "1"  # type: ignore[arg-type]
            assert not results  # still waiting
            c.portal.call(pool.release, pool.capacity)  # type: ignore[attr-defined]
            waiter.join(30)
        assert results == [200]
        assert pool.used == 0 and pool.waiting == 0 and scheduler.waiting == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/attention", {"text": TEXT, "model": "minilm", "measure": "norms"}),
        ("/api/aggregate", {"text": TEXT, "model": "minilm", "methods": ["alti"]}),
        ("/api/explain", {"text": TEXT, "model": "custom", "head": 0}),
    ],
    ids=["norms", "alti", "explain"],
)
def test_scheduler_call_routes_reserve_bytes(registry: ModelRegistry, path: str, body: dict[str, Any]) -> None:
    """norms, ALTI and the explainer (Scheduler.call) take bytes too: with an empty pool they are refused."""
    with borrowed(registry) as c:
        scheduler = c.app.state.scheduler  # type: ignore[attr-defined]
        while not scheduler.memory_sized:
            time.sleep(0.01)
        c.portal.call(scheduler.memory.resize, 0)  # type: ignore[attr-defined]
        r = c.post(path, json=body)
        assert is_error(r, 413, "too_large_for_memory"), r.text  # type: ignore[arg-type]
        assert "HEADMAP_MEMORY_BUDGET_MB" in r.json()["detail"]


# -- the response-size budget ---------------------------------------------------------------------


def test_response_too_large_names_the_ways_out(registry: ModelRegistry) -> None:
    engine = registry.get("minilm")
    t = len(engine.encode(TEXT))
    limit_mb = 0.05
    with borrowed(registry, max_response_mb=limit_mb) as c:
        r = c.post("/api/attention", json={"text": TEXT, "model": "minilm"})
        assert is_error(r, 413, "response_too_large")  # type: ignore[arg-type]
        detail = r.json()["detail"]
        size = 6 * 12 * t * t * 7  # every matrix as JSON, 7 bytes a weight
        assert size > limit_mb * MIB
        assert f"about {size / MIB:.0f} MiB" in detail and "HEADMAP_MAX_RESPONSE_MB" in detail
        assert "POST /api/runs" in detail
        fit = int(limit_mb * MIB // (t * t * 7))  # matrices that fit, by hand
        assert f"at most {fit} layer × head matrices" in detail
        assert '"encoding": "compact"' in detail  # 6·12·t²·4/3 bytes fits 0.05 MiB
        # and each way out works
        compact = {"text": TEXT, "model": "minilm", "encoding": "compact"}
        assert c.post("/api/attention", json=compact).status_code == 200
        subset = {"text": TEXT, "model": "minilm", "layers": [0], "heads": list(range(min(fit, 12)))}
        assert c.post("/api/attention", json=subset).status_code == 200
        over = {"text": TEXT, "model": "minilm", "layers": [0, 1, 2, 3, 4, 5], "heads": list(range(12))}
        assert c.post("/api/attention", json={**over, "measure": "norms"}).status_code == 413


# -- streamed bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["minilm", "custom"])
@pytest.mark.parametrize("encoding", ["json", "compact"])
def test_streamed_body_equals_the_built_one(registry: ModelRegistry, model: str, encoding: str) -> None:
    """Captured (minilm) and dense (custom) engines, a reordered subset: the layer-by-layer pieces join to
    the very bytes `render` builds whole, and parse to the same object."""
    engine = registry.get(model)
    layers = [engine.num_layers - 1, 0] if engine.num_layers > 1 else [0]
    req = AttentionRequest(text=TEXT, model=model, layers=layers, heads=[2, 0, 1], encoding=encoding)  # type: ignore[arg-type]
    result = service.compute_sync(registry, req)
    built = bytes(service.render(result, encoding))
    length, pieces = service.render_stream(result, encoding)
    streamed = b"".join(bytes(p) for p in pieces)
    assert length == len(streamed) == len(built)
    assert json.loads(streamed) == json.loads(built)
    assert streamed == built


def _long_text(words: int) -> str:
    return " ".join(["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "birds"] * (words // 10))


def test_large_response_is_streamed_and_matches(client: TestClient, registry: ModelRegistry) -> None:
    """Over STREAM_ABOVE (16 MiB) the route streams (Server-Timing says so); the parsed body equals the one
    built in-process."""
    body = {"text": _long_text(200), "model": "minilm"}
    r = client.post("/api/attention", json=body)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content) > memory.STREAM_ABOVE
    timing = r.headers["server-timing"]  # the page reads /app;dur=([\d.]+)/
    assert timing.startswith("app;dur=") and timing.endswith(';desc="to first byte; body streamed"')
    expected = json.loads(bytes(service.render(service.compute_sync(registry, AttentionRequest(**body)))))
    assert r.json() == expected


def test_streamed_body_through_gzip(registry: ModelRegistry) -> None:
    """A streamed body under `gzip_max_bytes` to a remote client is compressed whole, and decompresses to
    the same JSON; over it, it goes as is."""
    body = {"text": _long_text(200), "model": "minilm"}  # 202 tokens: 20.6 MB as JSON, over STREAM_ABOVE
    expected = json.loads(bytes(service.render(service.compute_sync(registry, AttentionRequest(**body)))))
    raw_size = len(json.dumps(expected))  # about the body's size
    with borrowed(registry, gzip_max_bytes=32 * MIB) as c:  # TestClient is not a loopback client
        r = c.post("/api/attention", json=body, headers={"accept-encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert "body streamed" in r.headers["server-timing"]
        assert json.loads(r.content) == expected  # httpx decoded it
        assert int(r.headers["content-length"]) < raw_size
    with borrowed(registry, gzip_max_bytes=memory.STREAM_ABOVE) as c:
        r = c.post("/api/attention", json=body, headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers and r.json() == expected


# -- the budget's default -------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_memory_max(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(root / "cgroup.controllers", "cpu memory\n")
    _write(proc, "0::/\n")
    _write(root / "memory.max", "2147483648\n")
    assert memory_limit(root, proc) == 2 * 1024**3
    _write(root / "memory.max", "max\n")
    assert memory_limit(root, proc) is None


def test_cgroup_v2_tightest_of_own_cgroup_and_ancestors(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(root / "cgroup.controllers", "memory\n")
    _write(proc, "0::/kubepods/pod1/ctr\n")
    _write(root / "kubepods/pod1/ctr/memory.max", "max\n")
    _write(root / "kubepods/pod1/memory.max", "1073741824\n")
    _write(root / "kubepods/memory.max", "8589934592\n")
    assert memory_limit(root, proc) == 1024**3


def test_cgroup_v1_memory_limit(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n")
    _write(root / "memory/docker/abc/memory.limit_in_bytes", "536870912\n")
    assert memory_limit(root, proc) == 512 * MIB
    _write(root / "memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    assert memory_limit(root, proc) is None
    _write(root / "memory/docker/abc/memory.limit_in_bytes", "garbage\n")
    assert memory_limit(root, proc) is None


def test_budget_default_and_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "memory_limit", lambda: 2048 * MIB)
    monkeypatch.setattr(memory, "physical_memory", lambda: 16384 * MIB)
    assert memory.budget_bytes(Settings()) == (2048 * MIB, "the container's memory limit (cgroup)")
    assert memory.budget_bytes(Settings(memory_budget_mb=1000))[0] == 1000 * MIB
    # pool = 2048 MiB × 0.75 − 500 MiB at rest = 1036 MiB
    assert memory.pool_bytes(Settings(), 500 * MIB) == 1036 * MIB
    monkeypatch.setattr(memory, "memory_limit", lambda: None)
    assert memory.budget_bytes(Settings()) == (16384 * MIB, "the machine's physical memory")


def test_allocator_setup_respects_the_environment() -> None:
    env = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
    said = memory.configure_allocator(env)
    assert said == (
        "MALLOC_ARENA_MAX=4 (environment), MALLOC_MMAP_THRESHOLD_=65536 (environment), "
        "MALLOC_TRIM_THRESHOLD_=131072 (environment)"
    )
    assert memory.rss_bytes() is None or memory.rss_bytes() > 0  # type: ignore[operator]


#: 50 casts of a 128-token layer's weights (12 × 128² float32) to int64 (1.5 MB each), as the JSON writer
#: does; prints the minor page faults they cost after a warm-up.
_FAULTS_SCRIPT = """
import resource, numpy as np
from headmap.serving import memory
memory.configure_allocator()
x = np.ones(12 * 128 * 128, dtype=np.float32)
x.astype(np.int64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    x.astype(np.int64)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(memory._LIBC is None, reason="glibc only")
def test_allocator_setup_reuses_memory_for_temporaries() -> None:
    """The server's allocator settings keep a layer's temporaries in the heap: freed and reused, not mapped,
    faulted in page by page and unmapped for each one (issue 19). The 1 MiB threshold used before shows the
    difference: ~384 page faults per 1.5 MB temporary."""

    def faults(**env: str) -> int:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT], env={**clean, **env}, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert faults() < 500  # 50 temporaries: a handful of faults, not one per page
    assert faults(MALLOC_MMAP_THRESHOLD_="1048576") > 50 * 300


def test_deploy_files_carry_the_budget() -> None:
    """Kubernetes hands its memory limit to the budget (downward API, MiB); the image caps malloc arenas."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    docs = [d for d in yaml.safe_load_all((root / "deploy/kubernetes.yaml").read_text()) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["HEADMAP_MEMORY_BUDGET_MB"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": container["name"], "resource": "limits.memory", "divisor": "1Mi"}
    assert container["resources"]["limits"]["memory"] == "2Gi"
    dockerfile = (root / "Dockerfile").read_text()
    for setting in ("MALLOC_ARENA_MAX=2", "MALLOC_MMAP_THRESHOLD_=4194304", "MALLOC_TRIM_THRESHOLD_=67108864"):
        assert setting in dockerfile
