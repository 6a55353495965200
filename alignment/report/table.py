"""From per-stage ``results.json`` files and per-item samples to comparison rows (bias suites first, then
retention) with each stage's change from base."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from alignment.report.compare import (
    Cell,
    Delta,
    MetricRow,
    adjust,
    goal_of,
    independent_delta,
    paired_delta,
)

Samples = dict[str, dict[str, list[dict[str, Any]]]]  # stage -> suite -> per-item records


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
    resamples: int = field(
        default=2000,
        metadata={
            "help": "paired bootstrap draws per change from base (the smallest bootstrap p-value is "
            "2/(resamples+1))"
        },
    )


def _kind(row: dict[str, Any], suite_kind: str, config: ReportConfig) -> str:
    return "retention" if f"{row['suite']}/{row['metric']}" in config.retention_metrics else suite_kind


def _cell(row: dict[str, Any]) -> Cell:
    low, high = row["ci95"] if row.get("ci95") else (None, None)
    return Cell(value=row["value"], ci_low=low, ci_high=high, n=row.get("n"))


def comparison_rows(
    stage_results: dict[str, dict[str, Any]], config: ReportConfig, samples: Samples | None = None
) -> list[MetricRow]:
    """Headline rows of every stage's results, merged by suite/metric, bias rows before retention rows,
    each with every stage's change from the first stage (the base).

    ``stage_results`` maps stage name (in display order, base first) to its ``results.json`` content;
    ``samples`` maps stage name to its per-item records by suite, for paired changes.
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
    ordered = sorted(rows.values(), key=lambda r: order[r.kind])  # stable: keeps suite order within a kind
    stages = list(stage_results)
    for stage in stages[1:]:
        for row in ordered:
            if stage in row.cells and stages[0] in row.cells:
                row.deltas[stage] = row_delta(row, stage, stages[0], stage_results, samples or {}, config)
        adjust(ordered, stage)
    return ordered


def row_delta(
    row: MetricRow,
    stage: str,
    base: str,
    stage_results: dict[str, dict[str, Any]],
    samples: Samples,
    config: ReportConfig,
) -> Delta:
    """The stage's change from base on one row: paired on the items both were scored on when their
    samples allow it, else from the two intervals with the reason in ``note``."""
    from alignment.evaluation.paired import Side, Unpaired, compare_metric
    from alignment.evaluation.registry import load_suites

    cell, base_cell = row.cells[stage], row.cells[base]
    spec = load_suites().get(row.suite)
    info = spec.metrics.get(row.metric) if spec else None
    if info is None or info.paired is None:
        return replace(independent_delta(cell, base_cell, row.goal), note="the suite defines no paired form")

    def side(name: str) -> Side:
        options = (stage_results[name]["suites"].get(row.suite) or {}).get("options") or {}
        records = samples.get(name, {}).get(row.suite) or []
        return Side(records, options, row.cells[name].value)

    try:
        estimate = compare_metric(
            spec.module,
            row.metric,
            info.paired,
            side(base),
            side(stage),
            seed=int(stage_results[base].get("seed") or 0),
            resamples=config.resamples,
        )
    except Unpaired as reason:
        return replace(independent_delta(cell, base_cell, row.goal), note=str(reason))
    return paired_delta(estimate, cell, base_cell, row.goal)


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
