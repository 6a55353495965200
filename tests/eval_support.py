"""Small benchmark files in the official layouts, for the evaluation tests."""

from __future__ import annotations

import csv
from pathlib import Path


def write_crows(root: Path, rows: list[tuple]) -> Path:
    """Write ``root/crows_pairs/crows_pairs_anonymized.csv`` from (sent_more, sent_less, direction, bias)."""
    (root / "crows_pairs").mkdir(parents=True)
    path = root / "crows_pairs" / "crows_pairs_anonymized.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        for i, row in enumerate(rows):
            writer.writerow([i, *row])
    return path
