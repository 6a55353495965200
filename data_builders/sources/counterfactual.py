"""SR-LLM's counterfactual set (``srllm/counterfactual-inhouse.csv``): a neutral sentence and its rewrites
that mention a specific group, one column per group (``gender_a_man``, ``race_an_Asian_person``...)."""

from __future__ import annotations

import os
from pathlib import Path

from alignment.errors import SafealignError, where
from data_builders.sources.readers import BadRow, BadRows, columns, parse_table, text_field
from data_builders.sources.records import CounterfactualRow
from data_builders.sources.resolve import resolve_data_file

RELATIVE = "srllm/counterfactual-inhouse.csv"
ORIGINAL_COL = "Original"


def load_counterfactual(
    path: str | os.PathLike | None = None,
    *,
    on_bad_row: str = "error",
    bad_rows: list[BadRow] | None = None,
) -> list[CounterfactualRow]:
    """Load the counterfactual set (520 rows, 10 group variants each in SR-LLM's file).

    Every column other than ``Original`` is a variant named ``<axis>_<group words>``; every variant
    must be non-empty text.
    """
    file = Path(resolve_data_file(RELATIVE, path))
    variant_cols = [c for c in columns(file) if c and c != ORIGINAL_COL]
    if not variant_cols:
        raise SafealignError(f"{where(file, 1)}: no variant columns besides {ORIGINAL_COL!r}")

    def parse(row_no: int, record: dict) -> CounterfactualRow:
        return CounterfactualRow(
            id=str(row_no),
            original=text_field(record, ORIGINAL_COL),
            variants={col: text_field(record, col) for col in variant_cols},
        )

    return parse_table(file, (ORIGINAL_COL,), parse, BadRows(on_bad_row, bad_rows))
