"""Read CSV/TSV/JSONL/JSON tables row by row and validate fields, naming file, row and field on failure.

Row numbers are line numbers in the file (a CSV header is line 1, so the first data row is row 2;
a JSONL row is its line; a JSON array item is its 1-based position). Bytes that are not UTF-8 are
kept as escape characters while parsing, so the error can name the exact row and field they sit in.

A problem in one row becomes a :class:`RowProblem`; the loader hands it to a :class:`BadRows` log,
which raises a :class:`SafealignError` (policy ``error``) or records it and lets the row be skipped
(policy ``skip``). Problems with the whole file (unreadable, no header, a missing column) always raise.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError, where
from alignment.io import file_lines, read_regular_file
from data_builders.text import visible_text

BAD_ROW_POLICIES = ("error", "skip")
MISSING_WORDS = frozenset({"nan", "null", "none", "na", "n/a"})
# Longer than any sentence, prompt or document these datasets hold: a value this long is a broken file
# (a lost quote or newline swallowed the rest of it), not data to train on.
MAX_TEXT_CHARS = 100_000
_SURROGATE = re.compile("[\udc80-\udcff]")
csv.field_size_limit(1 << 24)


class RowProblem(Exception):
    """A bad value in one row: which field and what is wrong (the loader adds file and row)."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, with where it was and why."""

    path: str
    row: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        return f"{where(self.path, self.row, self.field)}: {self.reason}"


class BadRows:
    """Apply the bad-row policy: raise on the first bad row (``error``) or collect them (``skip``)."""

    def __init__(self, policy: str = "error", collected: list[BadRow] | None = None):
        if policy not in BAD_ROW_POLICIES:
            raise SafealignError(f"on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, not {policy!r}")
        self.policy = policy
        self.rows: list[BadRow] = collected if collected is not None else []

    def flag(self, path: Path | str, row: int | None, problem: RowProblem) -> None:
        bad = BadRow(str(path), row, problem.field, problem.reason)
        if self.policy == "error":
            raise SafealignError(f"{bad} (fix the row, or pass --on-bad-row skip to skip bad rows)")
        self.rows.append(bad)


def _decode(path: Path) -> str:
    data = read_regular_file(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def file_format(path: Path) -> str:
    """``csv``, ``tsv``, ``jsonl`` or ``json`` from the file name (``.txt`` counts as one text per line)."""
    suffix = path.suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".txt": "txt"}
    if suffix not in formats:
        raise SafealignError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv, .jsonl or .json"
        )
    return formats[suffix]


def read_rows(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, record)`` for each data row; check that ``required`` columns exist.

    For CSV/TSV the header is checked before any row is read; for JSON formats each record must be an
    object, and a record lacking a required key is a row problem (raised through :class:`RowProblem`
    as the value ``None`` so the field check reports it).
    """
    fmt = file_format(path)
    text = _decode(path)
    if fmt in ("csv", "tsv"):
        yield from _read_delimited(path, text, "\t" if fmt == "tsv" else ",", required)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, text)
    elif fmt == "json":
        yield from _read_json(path, text)
    else:
        raise SafealignError(f"{path}: plain text files hold no columns; use .csv, .tsv, .jsonl or .json")


def _read_delimited(path: Path, text: str, delimiter: str, required: tuple[str, ...]):
    reader = csv.reader(file_lines(text, keepends=True), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise SafealignError(f"{path}: file is empty (expected a header row)") from None
    except csv.Error as exc:
        raise SafealignError(f"{where(path, 1)}: malformed header ({exc})") from exc
    header = [h.strip() for h in header]
    seen = set()
    for name in header:
        if name and name in seen:
            raise SafealignError(f"{where(path, 1, name)}: column appears twice in the header")
        seen.add(name)
    missing = [c for c in required if c not in seen]
    if missing:
        raise SafealignError(
            f"{where(path, 1, missing[0])}: required column missing; the header has "
            f"{', '.join(repr(h) for h in header if h)}"
        )
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SafealignError(f"{where(path, start)}: malformed CSV ({exc})") from exc
        row_no, start = start, reader.line_num + 1
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        record: dict[str, Any] = dict(zip(header, values, strict=False))  # length checked below
        if len(values) < len(header):
            record["__problem__"] = RowProblem(
                header[len(values)], f"missing: the row has {len(values)} fields, the header {len(header)}"
            )
        elif len(values) > len(header):
            record["__problem__"] = RowProblem(
                None, f"the row has {len(values)} fields, the header only {len(header)} (unquoted delimiter?)"
            )
        yield row_no, record


def _read_jsonl(path: Path, text: str):
    for row_no, line in enumerate(file_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield (
                row_no,
                {"__problem__": RowProblem(None, f"not valid JSON ({exc.msg} at column {exc.colno})")},
            )
            continue
        if not isinstance(record, dict):
            yield (
                row_no,
                {"__problem__": RowProblem(None, f"expected a JSON object, got {type(record).__name__}")},
            )
            continue
        yield row_no, record


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SafealignError(f"{where(path, exc.lineno)}: not valid JSON ({exc.msg})") from exc


def read_json_file(path: Path) -> Any:
    """A whole JSON document (a source's own layout); not UTF-8 or not JSON is one line naming the file."""
    try:
        text = read_regular_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafealignError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    return _parse_json(path, text)


def _read_json(path: Path, text: str):
    data = _parse_json(path, text)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SafealignError(f"{path}: expected a JSON array of objects (or JSONL, one object per line)")
    for row_no, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            record = {"__problem__": RowProblem(None, f"expected a JSON object, got {type(record).__name__}")}
        yield row_no, record


def check_row(record: dict[str, Any]) -> None:
    """Raise the structural problem the reader found in this row, if any."""
    problem = record.get("__problem__")
    if problem is not None:
        raise problem


def text_field(record: dict[str, Any], field: str, required: bool = True) -> str | None:
    """The stripped text in ``field``; a missing, empty, NaN/null, non-text or non-UTF-8 value is a problem.

    With ``required=False`` a missing or empty value gives ``None`` instead (wrong types still fail).

    >>> text_field({"a": " hi "}, "a")
    'hi'
    >>> text_field({"a": "NaN"}, "a")
    Traceback (most recent call last):
    ...
    data_builders.sources.readers.RowProblem: value is NaN/null
    """
    value = record.get(field)
    if value is None:
        if required:
            raise RowProblem(field, "missing" if field not in record else "value is null")
        return None
    if isinstance(value, float) and math.isnan(value):
        if required:
            raise RowProblem(field, "value is NaN/null")
        return None
    if not isinstance(value, str):
        raise RowProblem(field, f"expected text, got {type(value).__name__} {value!r}")
    if _SURROGATE.search(value):
        raise RowProblem(field, "not valid UTF-8 (re-save the file as UTF-8)")
    if len(value) > MAX_TEXT_CHARS:
        raise RowProblem(
            field,
            f"text too long ({len(value):,} characters, limit {MAX_TEXT_CHARS:,}): a lost quote or newline?",
        )
    value = value.strip()
    if not visible_text(value) or value.lower() in MISSING_WORDS:
        if required:
            raise RowProblem(field, "empty text" if not visible_text(value) else "value is NaN/null")
        return None
    return value


def choice_field(record: dict[str, Any], field: str, choices: tuple[str, ...]) -> str:
    """A text field whose value must be one of ``choices``."""
    value = text_field(record, field)
    if value not in choices:
        raise RowProblem(field, f"{value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def parse_table(
    path: Path,
    required: tuple[str, ...],
    parse,
    bad_rows: BadRows,
) -> list:
    """Read ``path`` and turn each row into a record with ``parse(row_number, record)``.

    Rows whose ``parse`` raises :class:`RowProblem` go to ``bad_rows``. A file that yields no usable
    row at all is an error whatever the policy.
    """
    records = []
    for row_no, record in read_rows(path, required):
        try:
            check_row(record)
            records.append(parse(row_no, record))
        except RowProblem as problem:
            bad_rows.flag(path, row_no, problem)
    if not records:
        raise SafealignError(f"{path}: no usable rows ({len(bad_rows.rows)} bad rows skipped)")
    return records


def columns(path: Path) -> list[str]:
    """The column names of a table: the CSV/TSV header, or every key used by a JSON/JSONL record."""
    if file_format(path) in ("csv", "tsv"):
        first = file_lines(_decode(path))[:1]
        delimiter = "\t" if file_format(path) == "tsv" else ","
        return [h.strip() for h in next(csv.reader(first, delimiter=delimiter), [])]
    names: dict[str, None] = {}
    for _, record in read_rows(path):
        names.update(dict.fromkeys(k for k in record if k != "__problem__"))
    return list(names)
