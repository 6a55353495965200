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


def assert_pairs_with_itself(results: dict, out_dir: Path) -> int:
    """Compare every headline metric that declares a paired form with itself, from the samples written to
    ``out_dir``: they must reproduce the reported value (else pairing refuses) and give a change of
    exactly zero, a zero-width interval and p = 1. Returns how many metrics were paired."""
    from alignment.evaluation.paired import Side, compare_metric, load_samples
    from alignment.evaluation.registry import load_suites

    samples, suites, paired = load_samples(out_dir), load_suites(), 0
    for row in results["metrics"]:
        spec = suites[row["suite"]]
        form = spec.metrics[row["metric"]].paired
        if not row["headline"] or form is None or row["value"] is None:
            continue
        side = Side(samples[row["suite"]], results["suites"][row["suite"]]["options"], row["value"])
        est = compare_metric(spec.module, row["metric"], form, side, side, resamples=200)
        assert (est.value, est.low, est.high, est.p) == (0.0, 0.0, 0.0, 1.0), row
        paired += 1
    return paired
