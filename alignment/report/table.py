"""From per-stage ``results.json`` files to comparison rows (bias suites first, then retention)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment.report.compare import Cell, MetricRow, goal_of


@dataclass
class ReportConfig:
    """How stages are judged against the base model."""

    tolerance: float = field(
        default=2.0,
        metadata={"help": "largest acceptable drop (percentage points) of a capability metric versus base"},
    )
    capability_metrics: list[str] = field(
        default_factory=lambda: [
            "stereoset/lms",
            "truthfulqa_mc/mc1",
            "truthfulqa_mc/mc2",
            "hellaswag/acc_norm",
        ],
        metadata={
            "help": "suite/metric rows checked for capability loss (a model that forgets looks unbiased)"
        },
    )
    retention_metrics: list[str] = field(
        default_factory=lambda: ["stereoset/lms"],
        metadata={"help": "rows of bias suites that measure retention rather than bias"},
    )


def _kind(row: dict[str, Any], suite_kind: str, config: ReportConfig) -> str:
    return "retention" if f"{row['suite']}/{row['metric']}" in config.retention_metrics else suite_kind


def _cell(row: dict[str, Any]) -> Cell:
    low, high = row["ci95"] if row.get("ci95") else (None, None)
    return Cell(value=row["value"], ci_low=low, ci_high=high, n=row.get("n"))


def comparison_rows(stage_results: dict[str, dict[str, Any]], config: ReportConfig) -> list[MetricRow]:
    """Headline rows of every stage's results, merged by suite/metric, bias rows before retention rows.

    ``stage_results`` maps stage name (in display order, base first) to its ``results.json`` content.
    """
    from alignment.evaluation.registry import load_suites

    suites = load_suites()
    rows: dict[str, MetricRow] = {}
    for stage, results in stage_results.items():
        for raw in results["metrics"]:
            if not raw.get("headline") or raw.get("value") is None:
                continue
            key = f"{raw['suite']}/{raw['metric']}"
            if key not in rows:
                spec = suites.get(raw["suite"])
                rows[key] = MetricRow(
                    suite=raw["suite"],
                    metric=raw["metric"],
                    kind=_kind(raw, spec.kind if spec else "bias", config),
                    goal=goal_of(raw.get("better", "higher"), raw.get("ideal")),
                    tolerance=config.tolerance if key in config.capability_metrics else None,
                    capability=key in config.capability_metrics,
                )
            rows[key].cells[stage] = _cell(raw)
    order = {"bias": 0, "retention": 1}
    return sorted(rows.values(), key=lambda r: order[r.kind])  # stable: keeps suite order within a kind


def breakdown(
    stage_results: dict[str, dict[str, Any]], suite: str, metric: str, prefix: str
) -> dict[str, dict[str, Cell]]:
    """Per-category cells ``{category: {stage: cell}}`` for rows whose group is ``prefix=<category>``."""
    out: dict[str, dict[str, Cell]] = {}
    for stage, results in stage_results.items():
        for raw in results["metrics"]:
            group = raw.get("group") or ""
            if (
                raw["suite"] == suite
                and raw["metric"] == metric
                and group.startswith(prefix + "=")
                and "/" not in group
                and raw.get("value") is not None
            ):
                out.setdefault(group.split("=", 1)[1], {})[stage] = _cell(raw)
    return out
