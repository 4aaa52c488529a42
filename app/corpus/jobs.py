"""Corpus jobs for the API: one small corpus at a time per server, in a background thread, in memory.

``JobManager.submit`` checks the texts (tokenizing them, so a text over the limit is refused at once with
its number), then runs the same shard computation and merge as ``headmap corpus`` on the server's loaded
engine. The route streams ``Job`` progress as server-sent events and returns ``Job.summary`` when done.
No web framework here: errors are ``APIError``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import APIError
from ..models.engine import Engine
from .compute import Gate, Options, direct, limited, plan, run_shard
from .reader import CorpusInputError, Text
from .run import accumulator, summarize, token_lengths

Status = Literal["running", "done", "failed", "cancelled"]


@dataclass
class Job:
    id: str
    model: str
    total: int
    done: int = 0
    status: Status = "running"
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    summary: dict[str, Any] | None = None
    error: APIError | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self) -> dict[str, Any]:
        """The ``CorpusJob`` fields: counts, rate (texts/s) and the estimated seconds left."""
        elapsed = (self.finished or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 and self.done else None
        eta = (self.total - self.done) / rate if rate and self.status == "running" else None
        return {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "elapsed_s": round(elapsed, 3),
            "rate": None if rate is None else round(rate, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "error": None if self.error is None else {"error": self.error.error, "detail": self.error.detail},
        }


class JobManager:
    """At most one running job; the last ``keep`` jobs stay readable."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.status == "running"), None)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise APIError(404, "job_not_found", f"No corpus job {job_id[:64]!r}; finished jobs are kept for a while.")
        return job

    def reserve(self, engine: Engine, total: int) -> Job:
        """A new running job, or 429 while another one runs (one corpus at a time per server)."""
        with self._lock:
            busy = self.running()
            if busy is not None:
                raise APIError(
                    429,
                    "corpus_busy",
                    f"A corpus job is already running ({busy.done} of {busy.total} texts); one runs at a time. "
                    "Retry when it has finished.",
                    {"Retry-After": "5"},
                )
            job = Job(id=uuid.uuid4().hex, model=engine.name, total=total)
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:
                oldest = next(iter(self.jobs))
                if self.jobs[oldest].status == "running":
                    break
                del self.jobs[oldest]
            return job

    def release(self, job: Job) -> None:
        with self._lock:
            self.jobs.pop(job.id, None)

    def start(
        self, job: Job, engine: Engine, texts: list[Text], options: Options, t_max: int, gate: Gate = direct
    ) -> None:
        """Run the job in its own thread; ``gate`` runs each batch's model work (the scheduler's background lane)."""
        threading.Thread(
            target=execute, args=(job, engine, texts, options, t_max, gate), name=f"corpus-{job.id[:8]}", daemon=True
        ).start()

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()


def check(engine: Engine, texts: list[Text], options: Options) -> int:
    """Tokenize every text (blocking); 413 naming the text over the limit. Returns the longest length."""
    try:
        return max(token_lengths(engine, texts, options, "texts"))
    except CorpusInputError as exc:
        raise APIError(413, "too_many_tokens", str(exc).replace("texts:", "text ", 1)) from None


def execute(job: Job, engine: Engine, texts: list[Text], options: Options, t_max: int, gate: Gate = direct) -> None:
    """Run the job to the end (in its own thread), recording progress, the summary or the error.

    ``t_max``: the longest text's token count, from ``check``.
    """
    try:
        acc = accumulator(engine, options, t_max)
        for spec in plan(texts, options.shard_size, "texts"):
            if job.cancel.is_set():
                job.status = "cancelled"
                return
            acc.add(run_shard(engine, spec, options, gate))  # shard order, as in the CLI's merge
            job.done += len(spec.texts)
        meta = {"input": {"path": "api", "format": None, "field": "text", "column": None, "limit": None},
                "options": options.__dict__, "shards": len(acc.merged), "table": None,
                "elapsed_s": round(time.monotonic() - job.started, 3)}  # fmt: skip
        job.summary = summarize(limited(engine, options.max_tokens), acc, meta)
        job.status = "done"
    except APIError as exc:
        job.error, job.status = exc, "failed"
    except CorpusInputError as exc:
        job.error, job.status = APIError(422, "invalid_corpus", str(exc)), "failed"
    except Exception as exc:  # a job thread must record its failure, not die silently
        import logging

        logging.getLogger("headmap").exception("corpus job %s failed", job.id)
        job.error, job.status = (
            APIError(500, "internal_error", f"The corpus job failed: {type(exc).__name__}."),
            "failed",
        )
    finally:
        job.finished = time.monotonic()
