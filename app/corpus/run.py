"""Running a corpus: read, check, shard, compute (here, in N processes, or on Ray), merge, write.

``run(config)`` is what ``headmap corpus`` calls. The numbers do not depend on the backend: shards are
fixed by the input and options, each is computed the same way wherever it runs, and they are merged in
shard order (``compute.Accumulator``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import APIError
from ..models.engine import Engine
from .compute import (
    Accumulator,
    Options,
    ShardResult,
    ShardSpec,
    clustering,
    encode,
    fingerprint,
    head_labels,
    limited,
    plan,
    run_shard,
)
from .measures import all_measures
from .reader import CorpusInputError, Text, read_corpus
from .store import RunDir, TableWriter, atomic

log = logging.getLogger("headmap")

Progress = Callable[[int, int], None]  # (texts done, texts in all)


class Interrupted(Exception):
    """Ctrl-C: the finished shards are saved; running the same command again resumes."""

    def __init__(self, shards_done: int, shards: int) -> None:
        super().__init__(f"{shards_done} of {shards} shards done")
        self.shards_done = shards_done
        self.shards = shards


@dataclass
class Config:
    input: str
    out: Path
    model: str | None = None
    format: str | None = None
    field: str = "text"
    column: str | None = None
    limit: int | None = None
    options: Options = Options()  # noqa: RUF009  # frozen dataclass: one shared default is safe
    workers: int = 1
    ray: str | None = None  # None: no Ray; "" or "auto": ray.init() (local or RAY_ADDRESS); else an address
    ray_actors: int | None = None
    progress: bool = True


def load_engine(model: str | None) -> Engine:
    """The named model (default minilm) from a registry configured like the server (``HEADMAP_*``)."""
    from ..models.registry import ModelRegistry
    from ..settings import Settings

    registry = ModelRegistry(Settings(warmup=False))
    registry.load_all()
    try:
        return registry.get(model)
    except APIError as exc:
        raise CorpusInputError(f"--model: {exc.detail}") from None


#: Texts tokenized per call when counting tokens (one batch call of the fast tokenizer each).
_COUNT_CHUNK = 1024


def token_lengths(engine: Engine, texts: list[Text], options: Options, source: str) -> list[int]:
    """Every text's token count (after ``--max-tokens`` truncation), failing early (with file and line) on a
    text over the limit. Counted a batch of texts at a time, without the offsets, labels and word ids a full
    ``encode`` makes."""
    eng = limited(engine, options.max_tokens)
    out: list[int] = []
    for start in range(0, len(texts), _COUNT_CHUNK):
        chunk = texts[start : start + _COUNT_CHUNK]
        for item, count in zip(chunk, eng.token_counts([t.text for t in chunk]), strict=True):
            if count > eng.max_tokens:
                if options.max_tokens is None:
                    encode(eng, item, False, source)  # raises the error naming the file and line
                count = len(encode(eng, item, True, source))  # what truncation leaves
            out.append(count)
    return out


# -- backends: each yields ShardResults in any order --------------------------------------------------


def local_backend(engine: Engine, pending: list[ShardSpec], options: Options,
                  on_batch: Callable[[int], None] | None = None) -> Iterator[ShardResult]:  # fmt: skip
    for spec in pending:
        yield run_shard(engine, spec, options, on_batch=on_batch)


_worker_engine: Engine | None = None


def _worker_init(model: str | None, threads: int) -> None:
    """Process-pool initializer: Ctrl-C is the parent's to handle; load the model once; own thread share."""
    global _worker_engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    _worker_engine = load_engine(model)


def _worker_run(job: tuple[ShardSpec, Options]) -> ShardResult:
    assert _worker_engine is not None
    return run_shard(_worker_engine, *job)


def pool_backend(model: str | None, pending: list[ShardSpec], options: Options, workers: int) -> Iterator[ShardResult]:
    """``workers`` spawned processes, each loading the model once and using its share of the CPUs."""
    from ..serving.threads import usable_cpus

    threads = max(1, usable_cpus() // workers)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(model, threads))
    try:
        yield from pool.imap_unordered(_worker_run, [(spec, options) for spec in pending])
        pool.close()
    except BaseException:
        pool.terminate()  # Ctrl-C or a failing shard: stop the others now
        raise
    finally:
        pool.join()


# -- the run ------------------------------------------------------------------------------------------


def summarize(engine: Engine, acc: Accumulator, meta: dict[str, Any]) -> dict[str, Any]:
    """The summary dict (``schemas.corpus.CorpusSummary``) of a finished accumulator."""
    labels = head_labels(engine.num_layers, engine.num_heads)
    js = acc.js_distance()
    similarity = None
    if js is not None:
        similarity = {
            "heads": labels,
            "texts": acc.js_texts,
            "js_distance": js.tolist(),
            "clustering": clustering(js, labels),
            "embedding": mds(js),
        }
    return {
        "complete": True,
        "version": __version__,
        "model": {
            "name": engine.name,
            "kind": engine.kind,
            "num_layers": engine.num_layers,
            "num_heads": engine.num_heads,
            "max_tokens": engine.max_tokens,
            "description": engine.description,
        },
        "texts": acc.texts,
        "tokens": {
            "total": acc.tokens,
            "min": acc.min_tokens,
            "max": acc.max_tokens,
            "mean": acc.tokens / acc.texts if acc.texts else 0.0,
            "truncated_texts": acc.truncated,
        },
        **meta,
        "measures": acc.measure_summary(),
        "similarity": similarity,
    }


def mds(distance: Any) -> list[list[float]]:
    """Classical multidimensional scaling of a distance matrix to 2-D (one [x, y] per head)."""
    import numpy as np

    d2 = np.asarray(distance) ** 2
    n = d2.shape[0]
    centre = np.eye(n) - np.ones((n, n)) / n
    b = -0.5 * centre @ d2 @ centre
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    coords = vecs[:, top] * np.sqrt(np.clip(vals[top], 0, None))
    # eigenvectors' signs are arbitrary: fix them so the plot does not flip between runs
    signs = np.where(coords[np.abs(coords).argmax(0), range(coords.shape[1])] < 0, -1.0, 1.0)
    return (coords * signs).tolist()  # type: ignore[no-any-return]


def accumulator(engine: Engine, options: Options, t_max: int) -> Accumulator:
    return Accumulator(engine.num_layers, engine.num_heads, all_measures(), t_max, options.bins)


def run(config: Config, on_progress: Progress | None = None, engine: Engine | None = None) -> dict[str, Any]:
    """Run (or resume) the corpus and write its folder; returns the summary. Raises ``CorpusInputError``
    on bad input (before anything is computed) and ``Interrupted`` on Ctrl-C.

    ``engine``: an already loaded model to use in this process (default: load ``config.model``); the
    ``--workers`` processes and Ray actors always load ``config.model`` themselves.
    """
    options = config.options
    source = "<stdin>" if config.input == "-" else config.input
    texts = read_corpus(config.input, config.format, config.field, config.column, config.limit)
    started = time.perf_counter()
    engine = engine or load_engine(config.model)
    lengths = token_lengths(engine, texts, options, source)
    t_max = max(lengths)
    specs = plan(texts, options.shard_size, source)
    extra = {"t_max": t_max, "field": config.field, "column": config.column}
    run_dir = RunDir(config.out, fingerprint(engine, texts, options, extra))
    meta = {
        "input": {"path": source, "format": config.format, "field": config.field, "column": config.column,
                  "limit": config.limit},
        "options": asdict(options),
        "shards": len(specs),
    }  # fmt: skip
    if run_dir.complete():
        log.info("%s: already complete", config.out)
        return dict(json.loads((config.out / "summary.json").read_text(encoding="utf-8")))
    run_dir.prepare({"model": engine.name, "texts": len(texts), **meta})
    done = run_dir.done(len(specs))
    pending = [s for s in specs if s.index not in done]
    texts_done = sum(len(specs[i].texts) for i in done)

    bar = _progress_bar(len(texts), texts_done, config.progress)
    moved = 0  # texts of the running shard the bar has already counted
    try:
        if config.ray is not None:
            from .ray_backend import ray_backend

            results = ray_backend(config.model, pending, options, config.ray, config.ray_actors)
        elif config.workers > 1:
            results = pool_backend(config.model, pending, options, config.workers)
        else:  # in this process the bar moves a batch at a time (a shard can take minutes on a large model)

            def on_batch(count: int) -> None:
                nonlocal moved
                moved += count
                if bar is not None:
                    bar.update(count)

            results = local_backend(engine, pending, options, on_batch)
        try:
            for result in results:
                run_dir.save_shard(result)
                done.add(result.index)
                texts_done += len(result)
                if bar is not None:
                    bar.update(len(result) - moved)
                moved = 0
                if on_progress is not None:
                    on_progress(texts_done, len(texts))
        except KeyboardInterrupt:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the pool / Ray backend (their finally blocks) before we report
            raise Interrupted(len(done), len(specs)) from None
    finally:
        if bar is not None:
            bar.close()

    acc = accumulator(engine, options, t_max)
    table = TableWriter(config.out, [m.name for m in all_measures()], engine.num_layers, engine.num_heads)
    ok = False
    try:
        for spec in specs:  # shard order: the merge does not depend on who finished first
            result = run_dir.load_shard(spec.index)
            acc.add(result)
            table.write(result, texts)
        ok = True
    finally:
        table.close(ok)
    meta["elapsed_s"] = round(time.perf_counter() - started, 3)
    meta["table"] = table.path.name
    summary = summarize(limited(engine, options.max_tokens), acc, meta)
    with atomic(config.out / "summary.json") as out:
        out.write(json.dumps(summary, indent=1, allow_nan=False))
    from ..report.corpus import render_corpus_report

    html = render_corpus_report(summary)
    with atomic(config.out / "report.html") as out:
        out.write(html)
    run_dir.mark_complete()
    return summary


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    # disable=None: drawn on a terminal only, so logs and pipes get no carriage-return noise
    return tqdm(total=total, initial=initial, unit="text", desc="corpus", dynamic_ncols=True, smoothing=0.1,
                disable=None)  # fmt: skip
