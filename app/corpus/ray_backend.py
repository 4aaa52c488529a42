"""``--ray``: the shards as a Ray Data dataset, mapped by a pool of actors that each load the model once.

Imported only when ``--ray`` is given (Ray is the optional extra ``headmap[ray]``). Each row is one shard
(its spec, pickled); ``map_batches`` with ``batch_size=1`` and an ``ActorPoolStrategy`` runs
``ShardActor.__call__`` on it and returns the pickled ``ShardResult``; the driver saves each as it streams
in, so progress, resuming and the exact merge are the same as on one machine.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..models.engine import Engine
from .compute import Options, ShardResult, ShardSpec, run_shard
from .reader import CorpusInputError


class ShardActor:
    """A Ray Data actor: loads ``model`` in its constructor, then runs one shard per call."""

    def __init__(self, model: str | None, threads: int) -> None:
        import torch

        from .run import load_engine

        torch.set_num_threads(threads)
        self.engine: Engine = load_engine(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["job"]:
            spec, options = pickle.loads(payload)
            out.append(pickle.dumps(run_shard(self.engine, spec, options), protocol=pickle.HIGHEST_PROTOCOL))
        return {"index": batch["index"], "result": np.array(out, dtype=object)}


def ray_backend(
    model: str | None, pending: list[ShardSpec], options: Options, address: str, actors: int | None
) -> Iterator[ShardResult]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise CorpusInputError("--ray needs Ray: pip install 'headmap[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    try:
        if not pending:
            return
        resources: dict[str, float] = ray.available_resources()  # type: ignore[no-untyped-call]
        cpus = max(1.0, float(resources.get("CPU", 1.0)))
        size = actors or max(1, int(cpus))
        threads = max(1, int(cpus // size))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # headmap draws its own bar over texts
        ds = ray.data.from_items(
            [{"index": s.index, "job": pickle.dumps((s, options), protocol=pickle.HIGHEST_PROTOCOL)} for s in pending],
            override_num_blocks=len(pending),
        )
        mapped = ds.map_batches(
            ShardActor,
            fn_constructor_kwargs={"model": model, "threads": threads},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(size, len(pending))),
            num_cpus=threads,
        )
        for row in mapped.iter_rows():
            result: Any = pickle.loads(row["result"])
            yield result
    finally:
        if started_here:
            ray.shutdown()
