"""CrowS-Pairs (``crows_pairs/crows_pairs_anonymized.csv``): 1,508 minimal pairs, 9 bias types."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from data_builders.sources.readers import BadRow, BadRows, RowProblem, choice_field, parse_table, text_field
from data_builders.sources.records import CrowsPair
from data_builders.sources.resolve import resolve_data_file
from data_builders.splits import connected_groups
from data_builders.text import normalize_text

RELATIVE = "crows_pairs/crows_pairs_anonymized.csv"
COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
DIRECTIONS = ("stereo", "antistereo")


def load_crows_pairs(
    path: str | os.PathLike | None = None,
    *,
    on_bad_row: str = "error",
    bad_rows: list[BadRow] | None = None,
) -> list[CrowsPair]:
    """Load and validate CrowS-Pairs; every row of the official file is kept (1,508 pairs).

    The pair id is the file's unnamed index column when present, else the row number. Rows with a
    missing or empty sentence, an unknown direction, or ``sent_more == sent_less`` are bad rows
    (``on_bad_row``: ``error`` raises, ``skip`` leaves them out and appends them to ``bad_rows``).
    Pairs whose sentences repeat another pair's share its ``group`` so splits keep them together.
    """
    file = resolve_data_file(RELATIVE, path)
    log = BadRows(on_bad_row, bad_rows)

    def parse(row_no: int, record: dict) -> CrowsPair:
        more = text_field(record, "sent_more")
        less = text_field(record, "sent_less")
        if normalize_text(more) == normalize_text(less):
            raise RowProblem("sent_less", "same sentence as sent_more (no minimal edit)")
        pair_id = (record.get("") or record.get("Unnamed: 0") or record.get("id") or "").strip()
        return CrowsPair(
            id=pair_id or str(row_no),
            sent_more=more,
            sent_less=less,
            direction=choice_field(record, "stereo_antistereo", DIRECTIONS),
            bias_type=text_field(record, "bias_type"),
            row=row_no,
        )

    pairs = parse_table(Path(file), COLUMNS, parse, log)
    _check_unique_ids(Path(file), pairs, log)
    pairs = [p for p in pairs if p is not None]
    groups = connected_groups([p.id for p in pairs], [[p.sent_more, p.sent_less] for p in pairs])
    return [dataclasses.replace(p, group=g) for p, g in zip(pairs, groups, strict=True)]


def _check_unique_ids(path: Path, pairs: list[CrowsPair], log: BadRows) -> None:
    seen: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        if pair.id in seen:
            log.flag(
                path, pair.row, RowProblem("id", f"pair id {pair.id!r} already used on row {seen[pair.id]}")
            )
            pairs[index] = None
        else:
            seen[pair.id] = pair.row
