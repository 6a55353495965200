"""Unsafe -> safe rewrite pairs: SR-LLM's ``srllm/train_500.csv`` or any CSV/TSV/JSONL with a column map."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from alignment.errors import SafealignError, where
from data_builders.sources.readers import BadRow, BadRows, RowProblem, columns, parse_table, text_field
from data_builders.sources.records import RewritePair
from data_builders.sources.resolve import resolve_data_file
from data_builders.splits import connected_groups
from data_builders.text import detokenize, normalize_text

RELATIVE = "srllm/train_500.csv"
DEFAULT_TEXT_COL = "biased_text"
DEFAULT_REWRITE_COL = "debiased_text"
DEFAULT_LABEL_COL = "label"
DEFAULT_BIAS_COL = "aspect"


def load_rewrite_pairs(
    path: str | os.PathLike | None = None,
    text_col: str = DEFAULT_TEXT_COL,
    rewrite_col: str = DEFAULT_REWRITE_COL,
    label_col: str | None = None,
    bias_col: str | None = None,
    *,
    on_bad_row: str = "error",
    bad_rows: list[BadRow] | None = None,
) -> list[RewritePair]:
    """Load rewrite pairs (SR-LLM's ``biased_text`` -> ``debiased_text`` by default).

    ``label_col``/``bias_col`` left as None use ``label``/``aspect`` when the file has them (no label or
    bias type otherwise); named explicitly, the column must exist. Other columns go to ``meta``.
    A pair whose rewrite equals its text, or whose text or rewrite is missing or empty, is a bad row.
    Both sides are detokenised (``data_builders.text.detokenize``): SR-LLM's original texts carry
    tokenizer spacing (``" ."``, ``" 's"``) that its rewrites lack, which a preference model would
    otherwise learn instead of the rewrite.
    Duplicates are kept here (the builders merge or flag them). Rows that share a (normalised) text
    or rewrite share a ``group`` (the normalised text of the first).
    """
    file = Path(resolve_data_file(RELATIVE, path))
    log = BadRows(on_bad_row, bad_rows)
    label_col = _optional_column(file, label_col, DEFAULT_LABEL_COL)
    bias_col = _optional_column(file, bias_col, DEFAULT_BIAS_COL)
    used = {text_col, rewrite_col, label_col, bias_col}

    def parse(row_no: int, record: dict) -> RewritePair:
        text = detokenize(text_field(record, text_col))
        rewrite = detokenize(text_field(record, rewrite_col))
        if normalize_text(text) == normalize_text(rewrite):
            raise RowProblem(rewrite_col, "rewrite is the same text as the original")
        meta = {k: v for k, v in record.items() if k and k not in used and v not in (None, "")}
        return RewritePair(
            id=str(row_no),
            text=text,
            rewrite=rewrite,
            label=text_field(record, label_col, required=False) if label_col else None,
            bias_type=text_field(record, bias_col, required=False) if bias_col else None,
            meta=meta,
        )

    pairs = parse_table(file, (text_col, rewrite_col), parse, log)
    groups = connected_groups([normalize_text(p.text) for p in pairs], [[p.text, p.rewrite] for p in pairs])
    return [dataclasses.replace(p, group=g) for p, g in zip(pairs, groups, strict=True)]


def _optional_column(file: Path, column: str | None, default: str) -> str | None:
    """The column to read: an explicit one must exist; the default is used only when present."""
    header = columns(file)
    if column is None:
        return default if default in header else None
    if column not in header:
        shown = ", ".join(repr(c) for c in sorted(header) if c)
        raise SafealignError(f"{where(file, 1, column)}: column not found; the file has {shown}")
    return column
