"""The ``results.json`` schema: what every evaluation writes and every report reads.

Version 1 (``"schema": "safealign.eval", "schema_version": 1``)::

    {
      "schema": "safealign.eval", "schema_version": 1, "created_at": ..., "safealign_version": ...,
      "model": {"spec": ..., "kind": ..., "path": ...}, "base_model": {...} | null,
      "preset": "quick", "seed": 0, "limit": null,
      "split": {"mode": "heldout", "test_fraction": 0.2, "seed": 0},
      "settings": {"device": ..., "dtype": ..., "batch_size": ..., "resamples": 1000, "ci_level": 0.95, ...},
      "suites": {"crows_pairs": {"status": "ok", "split": "test", "n": 301, "data": {file: sha256},
                                  "backends": {...}, "options": {...}, "wall_time_s": 12.3, ...}},
      "metrics": [{"suite": "crows_pairs", "metric": "pct_stereotype", "group": null, "value": 57.1,
                   "ci95": [51.2, 62.8], "n": 301, "ideal": 50, "better": "closer", "headline": true,
                   "split": "test", "seed": 0}, ...],
      "timings": {"load_model_s": ..., "total_s": ...},
      "versions": {...}
    }

``group`` is null for a suite's overall value and ``"<field>=<value>"`` for a breakdown row
(``"bias_type=race"``, ``"task=intrasentence/domain=gender"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.evaluation.stats import Estimate

SCHEMA = "safealign.eval"
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Metric:
    """One reported number: a suite's metric, overall (``group=None``) or for one category."""

    metric: str
    estimate: Estimate
    group: str | None = None

    def row(self, suite: str, info: Any, split: str, seed: int) -> dict[str, Any]:
        est = self.estimate
        ci = None if est.low is None else [_num(est.low), _num(est.high)]
        return {
            "suite": suite,
            "metric": self.metric,
            "group": self.group,
            "value": _num(est.value),
            "ci95": ci,
            "n": est.n,
            "ideal": info.ideal,
            "better": info.better,
            "unit": info.unit,
            "headline": bool(info.headline and self.group is None),
            "split": split,
            "seed": seed,
        }


@dataclass
class SuiteOutput:
    """What a suite returns: its metrics, per-item records (written to ``samples/<suite>.jsonl``) and facts
    for the results file (backends used, notes, counts)."""

    metrics: list[Metric]
    samples: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _num(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 6)


def check_results(results: dict[str, Any], source: str = "results") -> dict[str, Any]:
    """Validate the parts of a results dict that readers rely on; raise one clear error otherwise."""
    if results.get("schema") != SCHEMA:
        raise SafealignError(
            f"{source}: not a safealign evaluation result (schema {results.get('schema')!r})"
        )
    version = results.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SafealignError(
            f"{source}: results schema version {version!r}, this safealign reads version {SCHEMA_VERSION}"
        )
    for key in ("model", "preset", "seed", "split", "suites", "metrics"):
        if key not in results:
            raise SafealignError(f"{source}: missing key {key!r}")
    for i, row in enumerate(results["metrics"]):
        for key in ("suite", "metric", "group", "value", "ci95", "n", "split", "seed"):
            if key not in row:
                raise SafealignError(f"{source}: metrics[{i}] lacks {key!r}")
        if row["suite"] not in results["suites"]:
            raise SafealignError(
                f"{source}: metrics[{i}] names suite {row['suite']!r} with no entry in 'suites'"
            )
    return results


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate ``results.json`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SafealignError(
            f"{path}: no evaluation results here; run `safealign eval --out DIR` first"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafealignError(f"{path}: not valid JSON ({exc})") from exc
    return check_results(data, str(path))


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows (one or a few per suite), in suite order."""
    return [row for row in results["metrics"] if row.get("headline")]
