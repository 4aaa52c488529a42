"""Serving inside a memory budget: what a request will hold at its peak, the byte pool requests reserve
from, and the process's resident memory (RSS) and C allocator.

The pool: ``HEADMAP_MEMORY_BUDGET_MB`` (default: the container's memory limit, else the machine's
memory) × ``HEADMAP_MEMORY_SHARE``, minus the resident memory once the models are loaded. A request
reserves its expected peak (``attention_bytes`` and friends) before its forward pass and gives it
back once its response has been sent, so the sum of what admitted requests can hold never passes the
pool. The share leaves headroom for what the accounting does not see.

Why RSS and not what Python holds: tensors freed by torch go back to glibc's malloc, which keeps
them in its arenas (up to 8 × cores of them) instead of returning them to the OS: measured with 8
concurrent 512-token requests in one process, 1.98 GB stayed resident after the burst with nothing
alive, 0.65 GB after ``malloc_trim``. Most of it is glibc's dynamic mmap threshold (see
``DEFAULT_MMAP_THRESHOLD``): with it fixed at 1 MiB, 0.70 GB stayed without any trim. The server caps
the arenas, fixes the threshold (``configure_allocator``, or the image's environment) and trims
(``trim``) whenever nothing is reserved. All are no-ops off glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import Settings
from .threads import memory_limit, physical_memory, workers_sharing

log = logging.getLogger("headmap")

MIB = 1 << 20
FLOAT32 = 4
#: JSON bytes per weight: ",0.1234" (``encoding._TABLE``).
JSON_WEIGHT = 7
#: Compact bytes per weight: the uint8 level, then its base64 (4/3), counted as held together.
COMPACT_WEIGHT = 1 + 4 / 3
#: Bodies up to this size are built whole (``Server-Timing`` then covers the encoding); larger ones are
#: written layer by layer as the client reads them. Not lower: while a streamed body is read, the client
#: and the event loop take CPU from the torch thread's OpenMP team, whose barriers then wait on a thread
#: that is not running (a 128-token JSON body, 8.3 MB, took 20-40 ms a layer streamed, 1-2 ms built whole).
STREAM_ABOVE = 16 * MIB


# -- what a request holds ---------------------------------------------------------------------------


def response_bytes(num_tokens: int, layers: int, heads: int, encoding: str, target_tokens: int = 0) -> int:
    """Bytes of the ``attention`` (or ``attention_compact``) field of ``/api/attention``; with an encoder–decoder's
    ``target_tokens``, also its ``decoder_attention`` (target²) and ``cross_attention`` (target × source)."""
    weights = layers * heads * (num_tokens * num_tokens + target_tokens * (target_tokens + num_tokens))
    return int(weights * (JSON_WEIGHT if encoding == "json" else 4 / 3))


def forward_bytes(num_layers: int, num_heads: int, head_dim: int, num_tokens: int, captured: bool) -> int:
    """Peak of one item's forward pass and what it leaves behind, in bytes.

    Captured (SDPA path): the kept queries and keys, L × 2H × T × d floats, plus one layer's transient
    scores/softmax (3 × H × T²). Dense (eager ``output_attentions``): every layer's weights, L × H × T²,
    plus the same transient. Both: activations, about 16 × T × hidden (hidden ≈ H × d; the FFN is 4×).
    """
    t2 = num_tokens * num_tokens
    kept = num_layers * 2 * num_heads * num_tokens * head_dim if captured else num_layers * num_heads * t2
    transient = 3 * num_heads * t2
    activations = 16 * num_tokens * num_heads * head_dim
    return FLOAT32 * (kept + transient + activations)


def attention_bytes(
    *,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    num_tokens: int,
    captured: bool,
    layers: int,
    heads: int,
    encoding: str,
    measure: str = "weights",
    target_tokens: int = 0,
) -> int:
    """Expected peak of one ``/api/attention`` request (``layers`` × ``heads`` asked), in bytes.

    weights, body streamed (over ``STREAM_ABOVE``): the forward pass, plus one layer of the asked heads
    as float32 and encoded at a time. Built whole: the asked weights as float32 plus the whole body.
    norms (its own forward pass with hooks, every head): dense weights and norms of every layer, the
    value vectors (L × H × T × d), and the per-layer float64 Gram mix (3 × H × T²), plus the body.
    An encoder–decoder's ``target_tokens`` add its decoder and cross weights (dense, written whole) to both.
    """
    body = response_bytes(num_tokens, layers, heads, encoding)
    per_weight = JSON_WEIGHT if encoding == "json" else COMPACT_WEIGHT
    t2 = num_tokens * num_tokens
    seq2seq = int(num_layers * num_heads * target_tokens * (target_tokens + num_tokens) * (FLOAT32 + per_weight))
    if measure == "norms":
        model = FLOAT32 * (2 * num_layers * num_heads * t2 + num_layers * num_heads * num_tokens * head_dim)
        model += 8 * 3 * num_heads * t2 + forward_bytes(num_layers, num_heads, head_dim, num_tokens, False)
        return int(model + body + layers * heads * t2 * per_weight) + seq2seq
    model = forward_bytes(num_layers, num_heads, head_dim, num_tokens, captured)
    if body > STREAM_ABOVE:
        return int(model + heads * t2 * (FLOAT32 + per_weight)) + seq2seq
    return int(model + layers * heads * t2 * (FLOAT32 + per_weight)) + seq2seq


def python_values_bytes(count: int) -> int:
    """A payload of ``count`` numbers held as Python lists of floats and then as JSON: about 56 bytes each
    (a 24-byte float object, an 8-byte list slot, up to ~24 bytes of text)."""
    return 56 * count


# -- the pool ---------------------------------------------------------------------------------------


def budget_bytes(settings: Settings) -> tuple[int, str]:
    """The process's memory budget in bytes, and where it came from."""
    if settings.memory_budget_mb is not None:
        return settings.memory_budget_mb * MIB, "HEADMAP_MEMORY_BUDGET_MB"
    limit = memory_limit()
    machine = physical_memory()
    if limit is not None and (machine is None or limit < machine):
        total, source = limit, "the container's memory limit (cgroup)"
    elif machine is not None:
        total, source = machine, "the machine's physical memory"
    else:
        total, source = 2048 * MIB, "a 2 GiB fallback (no limit or machine size found)"
    workers = workers_sharing()
    if workers > 1:  # every worker process has its own models and pool: they share the limit
        return total // workers, f"{source} / {workers} workers (WEB_CONCURRENCY)"
    return total, source


def pool_bytes(settings: Settings, resident: int) -> int:
    """What requests may reserve: budget × share − ``resident`` (the process at rest), at least 0."""
    budget, _ = budget_bytes(settings)
    return max(0, int(budget * settings.memory_share) - resident)


class TooBig(Exception):
    """A reservation larger than the whole pool: it could never be granted."""

    def __init__(self, nbytes: int, capacity: int) -> None:
        super().__init__(f"{nbytes} bytes > pool of {capacity}")
        self.nbytes = nbytes
        self.capacity = capacity


@dataclass
class BytePool:
    """Bytes granted first come, first served: a request that does not fit waits, and so does everyone
    behind it (a large request is never starved by a stream of small ones)."""

    capacity: int
    used: int = 0
    #: Called when a release leaves nothing held and nobody waiting (the server trims its allocator then).
    on_idle: Callable[[], None] | None = field(default=None, repr=False)
    _waiters: deque[tuple[int, asyncio.Future[None]]] = field(default_factory=deque, repr=False)

    @property
    def waiting(self) -> int:
        return sum(1 for _, fut in self._waiters if not fut.done())

    def try_acquire(self, nbytes: int) -> bool:
        """Take ``nbytes`` if they fit now and nobody waits before them; False otherwise (nothing taken)."""
        if self._waiters or self.used + nbytes > self.capacity:
            return False
        self.used += nbytes
        return True

    async def acquire(self, nbytes: int) -> None:
        """Take ``nbytes`` once they are free (FIFO). ``TooBig`` at once if they never could be."""
        if nbytes > self.capacity:
            raise TooBig(nbytes, self.capacity)
        if self.try_acquire(nbytes):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, fut))
        try:
            await fut
        except BaseException:  # cancelled (time limit, client gone): give back what may have been granted
            if fut.done() and not fut.cancelled():
                self.used -= nbytes
            else:
                fut.cancel()
            self._grant()  # a large request leaving the head may let smaller ones through
            raise

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.used < 0:
            raise AssertionError(f"byte pool released more than it granted ({self.used})")
        self._grant()
        if self.used == 0 and self.on_idle is not None:
            self.on_idle()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            nbytes, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if nbytes > self.capacity:  # the pool shrank below it
                self._waiters.popleft()
                fut.set_exception(TooBig(nbytes, self.capacity))
                continue
            if self.used + nbytes > self.capacity:
                return
            self._waiters.popleft()
            self.used += nbytes
            fut.set_result(None)


class Hold:
    """The bytes one request holds, given back by ``release`` once its response is out and no work that
    uses them is still running (``pin``/``unpin`` around a forward pass that may outlive a time limit)."""

    def __init__(self, pool: BytePool) -> None:
        self.pool = pool
        self.nbytes = 0
        self._pins = 0
        self._released = False

    def add(self, nbytes: int) -> None:
        self.nbytes += nbytes

    def pin(self) -> None:
        self._pins += 1

    def unpin(self) -> None:
        self._pins -= 1
        self._settle()

    def release(self) -> None:
        """Idempotent; the bytes go back now, or when the last running work using them ends."""
        self._released = True
        self._settle()

    def _settle(self) -> None:
        if self._released and self._pins == 0 and self.nbytes:
            nbytes, self.nbytes = self.nbytes, 0
            self.pool.release(nbytes)


# -- the process ------------------------------------------------------------------------------------

_STATM = Path("/proc/self/statm")


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


_LIBC = _libc()
#: glibc's ``mallopt`` parameter for the arena count (malloc.h ``M_ARENA_MAX``).
M_ARENA_MAX = -8


#: Arenas when ``MALLOC_ARENA_MAX`` is not set: the event loop's thread and one for every worker thread
#: together, instead of glibc's 8 per core, each of which keeps its own freed tensors.
DEFAULT_ARENAS = 2
#: Allocations from this size up are mmapped, and unmapped when freed, when ``MALLOC_MMAP_THRESHOLD_`` is
#: not set. glibc's own threshold starts at 128 KiB but rises to the size of each mmapped chunk freed (up
#: to 32 MiB), so after the first large response a layer's weights and text (12-22 MB at 512 tokens) come
#: from the arenas' heaps and stay resident after they are freed; a fixed threshold stops that. Not lower:
#: every temporary above it is mapped, faulted in page by page and unmapped again; at 1 MiB the 1.5 MB
#: temporaries of encoding one 128-token layer cost 10x their work (0.9 ms instead of 0.08 ms a cast).
DEFAULT_MMAP_THRESHOLD = 4 << 20
#: Free memory at the top of a heap that glibc keeps instead of returning it at once, when
#: ``MALLOC_TRIM_THRESHOLD_`` is not set. Fixing the mmap threshold also fixes this one at its 128 KiB
#: default, and then each large temporary grows the heap and shrinks it again when freed (the same page
#: faults as mapping it). The server gives free memory back itself (``trim``, once idle for ``TRIM_IDLE_S``).
DEFAULT_TRIM_THRESHOLD = 64 << 20
#: Seconds with nothing reserved before the server trims: a trim after every request hands back the pages
#: the next request then faults in again (at 128 tokens that made a sequence of requests measurably slower),
#: while after a burst the memory still goes back this soon.
TRIM_IDLE_S = 1.0
#: glibc ``mallopt`` parameter (malloc.h ``M_MMAP_THRESHOLD``); setting it turns the dynamic threshold off.
M_MMAP_THRESHOLD = -3
#: glibc ``mallopt`` parameter (malloc.h ``M_TRIM_THRESHOLD``).
M_TRIM_THRESHOLD = -1


def configure_allocator(env: dict[str, str] | None = None) -> str:
    """Cap glibc's arenas and fix its mmap and trim thresholds where the server starts, unless the environment
    (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, which the image sets) already
    did; says what it did."""
    mine = env is None
    env = dict(os.environ) if env is None else env
    done = []
    for name, param, value in (
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, DEFAULT_ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD),
    ):
        if env.get(name, "").strip():
            done.append(f"{name}={env[name].strip()} (environment)")
            continue
        if mine:  # worker processes (--workers) read it when their allocator starts
            os.environ[name] = str(value)
        if _LIBC is not None and _LIBC.mallopt(param, value):
            done.append(f"{name}={value} (mallopt)")
    return ", ".join(done) or "allocator left as it is (not glibc)"


def trim() -> bool:
    """Give the allocator's free memory back to the OS (``malloc_trim(0)``, every arena); True if it did."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
