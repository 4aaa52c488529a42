"""The output folder of a corpus run: shards that survive interruption, and the final files.

    DIR/run.json            what this folder is computing (fingerprint, model, counts); written first
    DIR/shards/NNNNN.npz    one finished shard each (per-text values, JS distance sum)
    DIR/summary.json        the corpus summary               } written only once every shard is in,
    DIR/texts.parquet|csv   one row per text, every head     } each to a temporary name and renamed;
    DIR/report.html         the self-contained HTML report   }
    DIR/COMPLETE            the fingerprint, written last: only then is the folder a finished run

Every file is written to ``name.tmp-<pid>`` and renamed, so a file with its final name is whole.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

from .compute import ShardResult
from .reader import CorpusInputError, Text

FINAL = ("summary.json", "texts.parquet", "texts.csv", "report.html")


@contextmanager
def atomic(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open ``path.tmp-<pid>`` for writing; on success fsync and rename it to ``path``, else remove it."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        handle: IO[Any]
        with open(tmp, mode) if "b" in mode else open(tmp, mode, encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


class RunDir:
    """One corpus run's folder. ``prepare`` checks it belongs to this run (or is new) before anything is written."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.root = root
        self.fingerprint = fingerprint
        self.shards = root / "shards"

    def complete(self) -> bool:
        marker = self.root / "COMPLETE"
        return marker.is_file() and marker.read_text(encoding="utf-8").strip() == self.fingerprint

    def prepare(self, meta: dict[str, Any]) -> None:
        """Create the folder, or reopen it to resume. Refuses a folder holding something else."""
        run_json = self.root / "run.json"
        if self.root.exists() and not self.root.is_dir():
            raise CorpusInputError(f"{self.root}: exists and is not a folder")
        if run_json.is_file():
            try:
                previous = json.loads(run_json.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                previous = None
            if previous != self.fingerprint:
                raise CorpusInputError(
                    f"{self.root}: holds a run with other texts, model or options; "
                    "choose another --out, or delete the folder to start over"
                )
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise CorpusInputError(f"{self.root}: is not empty and holds no headmap corpus run; choose another --out")
        self.shards.mkdir(parents=True, exist_ok=True)
        for name in ("COMPLETE", *FINAL):  # an unfinished folder must not look finished
            with suppress(FileNotFoundError):
                (self.root / name).unlink()
        for stale in self.root.glob("*.tmp-*"):
            with suppress(OSError):
                stale.unlink()
        for stale in self.shards.glob("*.tmp-*"):
            with suppress(OSError):
                stale.unlink()
        with atomic(run_json) as out:
            json.dump({"fingerprint": self.fingerprint, **meta}, out, indent=1)

    def shard_path(self, index: int) -> Path:
        return self.shards / f"{index:05d}.npz"

    def done(self, count: int) -> set[int]:
        """Indices of the shards already finished (whole files of this run)."""
        out = set()
        for i in range(count):
            path = self.shard_path(i)
            if path.is_file():
                try:
                    with np.load(path) as data:
                        if str(data["fingerprint"]) == self.fingerprint:
                            out.add(i)
                except (OSError, ValueError, KeyError):
                    path.unlink()  # unreadable: compute it again
        return out

    def save_shard(self, result: ShardResult) -> None:
        arrays: dict[str, Any] = {
            "fingerprint": np.array(self.fingerprint),
            "index": np.array(result.index),
            "start": np.array(result.start),
            "lines": result.lines,
            "tokens": result.tokens,
            "truncated": result.truncated,
        }
        arrays.update({f"v_{name}": values for name, values in result.values.items()})
        if result.js_sum is not None:
            arrays["js_sum"] = result.js_sum
            arrays["js_texts"] = np.array(result.js_texts)
        with atomic(self.shard_path(result.index), "wb") as out:
            np.savez(out, **arrays)

    def load_shard(self, index: int) -> ShardResult:
        with np.load(self.shard_path(index)) as data:
            return ShardResult(
                index=int(data["index"]),
                start=int(data["start"]),
                lines=data["lines"],
                tokens=data["tokens"],
                truncated=data["truncated"],
                values={key[2:]: data[key] for key in data.files if key.startswith("v_")},
                js_sum=data["js_sum"] if "js_sum" in data.files else None,
                js_texts=int(data["js_texts"]) if "js_texts" in data.files else 0,
            )

    def mark_complete(self) -> None:
        with atomic(self.root / "COMPLETE") as out:
            out.write(self.fingerprint + "\n")


def table_columns(measures: list[str], layers: int, heads: int) -> list[str]:
    return ["index", "line", "tokens", "truncated", "text"] + [
        f"{m}_L{layer}H{head}" for m in measures for layer in range(layers) for head in range(heads)
    ]


def _rows(result: ShardResult, texts: list[Text], measures: list[str]) -> dict[str, Any]:
    """Column -> values of one shard (per head: ``{measure}_L{l}H{h}``)."""
    n = len(result)
    cols: dict[str, Any] = {
        "index": np.arange(result.start, result.start + n, dtype=np.int64),
        "line": result.lines,
        "tokens": result.tokens,
        "truncated": result.truncated,
        "text": [t.text for t in texts[result.start : result.start + n]],
    }
    for m in measures:
        values = result.values[m]  # (n, L, H)
        for layer in range(values.shape[1]):
            for head in range(values.shape[2]):
                cols[f"{m}_L{layer}H{head}"] = values[:, layer, head]
    return cols


class TableWriter:
    """The per-text table, shard by shard: Parquet when pyarrow is installed, else CSV (empty cell = undefined)."""

    def __init__(self, root: Path, measures: list[str], layers: int, heads: int) -> None:
        self.measures = measures
        self.columns = table_columns(measures, layers, heads)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            self.path = root / "texts.csv"
        else:
            self.path = root / "texts.parquet"
        self._ctx = atomic(self.path, "wb" if self.path.suffix == ".parquet" else "w")
        self._handle = self._ctx.__enter__()
        self._writer: Any = None
        if self.path.suffix == ".csv":
            self._writer = csv.writer(self._handle)
            self._writer.writerow(self.columns)

    def write(self, result: ShardResult, texts: list[Text]) -> None:
        cols = _rows(result, texts, self.measures)
        if self.path.suffix == ".csv":
            n = len(result)
            for i in range(n):
                self._writer.writerow(
                    [
                        "" if isinstance(v, float) and np.isnan(v) else v
                        for v in (_cell(cols[c][i]) for c in self.columns)
                    ]
                )
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_arrays([_arrow(cols[c]) for c in self.columns], names=self.columns)
        if self._writer is None:
            # Per-head float columns: dictionary encoding finds nothing to share, and their min/max statistics
            # cost a third of the write; the identifying columns keep theirs (row-group pruning by line or length).
            self._writer = pq.ParquetWriter(self._handle, table.schema, use_dictionary=False,
                                            write_statistics=["index", "line", "tokens", "truncated"])  # fmt: skip
        self._writer.write_table(table)

    def close(self, ok: bool) -> None:
        if self.path.suffix == ".parquet" and self._writer is not None:
            self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            exc = RuntimeError("table not finished")
            with suppress(RuntimeError):
                self._ctx.__exit__(type(exc), exc, None)


def _arrow(values: Any) -> Any:
    """A pyarrow array of a table column, built from its buffers. ``pa.array`` on a NumPy array or a list
    imports pandas (half a second, once per process) only to ask whether it was given pandas objects."""
    import pyarrow as pa

    if isinstance(values, list):  # the texts: UTF-8 bytes and their int32 offsets
        data = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(data) + 1, dtype=np.int32)
        np.cumsum([len(d) for d in data], out=offsets[1:])
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(pa.string(), len(data), buffers)
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:  # Arrow packs booleans into bits, least significant first
        bits = pa.py_buffer(np.packbits(values, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, bits])
    kind = {np.dtype(np.float64): pa.float64(), np.dtype(np.int64): pa.int64()}[values.dtype]
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _cell(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return int(bool(value))
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
