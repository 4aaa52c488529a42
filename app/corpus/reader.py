"""Reading a corpus: one text per line (.txt), JSON lines (.jsonl), CSV, Parquet, or standard input.

Every problem is a ``CorpusInputError`` whose message names the file and, where there is one, the line
(1-based, as an editor shows it; for CSV the header is line 1; for Parquet the row, 1-based).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Format = Literal["txt", "jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("txt", "jsonl", "csv", "parquet")
_SUFFIXES: dict[str, Format] = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class CorpusInputError(Exception):
    """Bad input: unreadable, malformed, empty or too long. The message names the file and line."""


@dataclass(frozen=True)
class Text:
    """One text of the corpus and where it came from."""

    line: int  # 1-based line (txt, jsonl, csv) or row (parquet) in the input
    text: str


def detect_format(name: str, given: str | None) -> Format:
    """The format from ``given`` (``--format``) or the file suffix; ``-`` (stdin) defaults to txt."""
    if given:
        if given not in FORMATS:
            raise CorpusInputError(f"{name}: unknown format {given!r}; use one of {', '.join(FORMATS)}")
        return given  # type: ignore[return-value,unused-ignore]
    if name == "-":
        return "txt"
    suffix = Path(name).suffix.lower()
    if suffix not in _SUFFIXES:
        raise CorpusInputError(
            f"{name}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
            f"name it .txt, .jsonl, .csv or .parquet, or pass --format"
        )
    return _SUFFIXES[suffix]


def _lines(data: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(io.StringIO(data, newline=None), start=1):
        yield number, line.rstrip("\n")


def _txt(name: str, data: str) -> Iterator[Text]:
    for number, line in _lines(data):
        if line.strip():  # blank lines separate nothing and are skipped
            yield Text(number, line)


def _jsonl(name: str, data: str, field: str) -> Iterator[Text]:
    for number, line in _lines(data):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusInputError(f"{name}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise CorpusInputError(f"{name}:{number}: expected a JSON object with a {field!r} field")
        if field not in row:
            have = ", ".join(repr(k) for k in list(row)[:8]) or "none"
            raise CorpusInputError(f"{name}:{number}: no field {field!r} (fields: {have}); choose one with --field")
        value = row[field]
        if not isinstance(value, str):
            raise CorpusInputError(f"{name}:{number}: field {field!r} is {type(value).__name__}, not a string")
        if value.strip():
            yield Text(number, value)


def _csv(name: str, data: str, column: str | None) -> Iterator[Text]:
    reader = csv.reader(io.StringIO(data, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise CorpusInputError(f"{name}:1: not CSV ({exc})") from None
    col = column or "text"
    if col not in header:
        have = ", ".join(repr(h) for h in header[:12]) or "none"
        raise CorpusInputError(f"{name}:1: no column {col!r} (columns: {have}); choose one with --column")
    at = header.index(col)
    try:
        for row in reader:
            number = reader.line_num
            if not row:
                continue
            if at >= len(row):
                raise CorpusInputError(f"{name}:{number}: the row has {len(row)} fields, no {col!r} column")
            if row[at].strip():
                yield Text(number, row[at])
    except csv.Error as exc:
        raise CorpusInputError(f"{name}:{reader.line_num}: not CSV ({exc})") from None


def _parquet(name: str, raw: bytes, column: str | None) -> Iterator[Text]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusInputError(
            f"{name}: reading Parquet needs pyarrow (pip install pyarrow, or headmap[ray]); "
            "or convert the file to .jsonl or .csv"
        ) from None
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise CorpusInputError(f"{name}: not a Parquet file ({exc})") from None
    col = column or "text"
    if col not in table.column_names:
        have = ", ".join(repr(c) for c in table.column_names[:12]) or "none"
        raise CorpusInputError(f"{name}: no column {col!r} (columns: {have}); choose one with --column")
    for number, value in enumerate(table.column(col).to_pylist(), start=1):
        if value is None:
            continue
        if not isinstance(value, str):
            raise CorpusInputError(f"{name}: row {number}: column {col!r} is {type(value).__name__}, not a string")
        if value.strip():
            yield Text(number, value)


def parse(name: str, raw: bytes, fmt: Format, field: str = "text", column: str | None = None) -> Iterator[Text]:
    """The texts of ``raw`` (the file's bytes), skipping blank ones. ``name`` labels messages."""
    if fmt == "parquet":
        yield from _parquet(name, raw, column)
        return
    try:
        data = raw.decode("utf-8-sig")  # a BOM from Windows editors is not part of the first text
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusInputError(f"{name}:{line}: not UTF-8 text (byte {exc.start})") from None
    if fmt == "txt":
        yield from _txt(name, data)
    elif fmt == "jsonl":
        yield from _jsonl(name, data, field)
    else:
        yield from _csv(name, data, column)


def read_bytes(path: str) -> bytes:
    """The file's bytes (``-``: all of standard input)."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusInputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CorpusInputError(f"{path}: cannot read ({exc.strerror})") from None


def take(texts: Iterable[Text], limit: int | None) -> list[Text]:
    """The first ``limit`` texts (all when None)."""
    out: list[Text] = []
    for item in texts:
        if limit is not None and len(out) >= limit:
            break
        out.append(item)
    return out


def read_corpus(
    path: str,
    fmt: str | None = None,
    field: str = "text",
    column: str | None = None,
    limit: int | None = None,
) -> list[Text]:
    """Read and parse ``path`` (or ``-``); raises ``CorpusInputError`` on any problem, an empty corpus too."""
    kind = detect_format(path, fmt)
    label = "<stdin>" if path == "-" else path
    texts = take(parse(label, read_bytes(path), kind, field, column), limit)
    if not texts:
        raise CorpusInputError(f"{label}: the corpus is empty (no non-blank text)")
    return texts
