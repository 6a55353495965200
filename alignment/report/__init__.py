"""The comparison report: base and every stage on bias and retention, with CIs, plots and verdicts.

:func:`write_report` takes each stage's evaluation results (``results.json`` content) and training record
(``stage.json`` content) and writes, atomically, into the run directory:

- ``metrics.json``: the table rows with per-stage cells and deltas to base (paired CI, raw and
  Holm-adjusted p-values, the test), verdicts and provenance;
- ``report.md`` (figures in ``report_files/``) and a self-contained ``report.html`` (figures embedded).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignment.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from alignment.report import plots, render
from alignment.report.compare import ALPHA, MetricRow, verdict
from alignment.report.table import ReportConfig, Samples, breakdown, comparison_rows

REPORT_SCHEMA = "safealign.report"
REPORT_SCHEMA_VERSION = 2

__all__ = ["ReportConfig", "build_report", "write_report", "print_report"]


def _training_info(record: dict[str, Any] | None) -> dict[str, Any]:
    if not record:
        return {"status": "not trained (base model)"}
    memory = record.get("peak_memory") or {}
    steps = record.get("steps") or {}
    keep = (
        "last_logged_loss",
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
        "reward_mean",
        "kl",
        "objective/kl",
        "eval_reward_change",
        "eval_kl_per_token_end",
    )
    return {
        "status": record.get("status"),
        "steps": steps.get("global_step"),
        "wall_time_s": record.get("wall_time_s"),
        "peak_rss_mb": memory.get("process_peak_rss_mb"),
        "peak_cuda_mb": memory.get("cuda_peak_allocated_mb"),
        "metrics": {k: v for k, v in (record.get("metrics") or {}).items() if k in keep},
    }


def _row_json(row: MetricRow, stages: list[str], base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "suite": row.suite,
        "metric": row.metric,
        "kind": row.kind,
        "goal": row.goal,
        "capability_check": row.capability,
        "tolerance": row.tolerance,
        "cells": {},
        "deltas": {},
    }
    for stage in stages:
        cell = row.cells.get(stage)
        if cell is None:
            continue
        ci = None if cell.ci_low is None else [cell.ci_low, cell.ci_high]
        out["cells"][stage] = {"value": cell.value, "ci95": ci, "n": cell.n}
        d = row.deltas.get(stage)
        if d is not None:
            out["deltas"][stage] = {
                "value": d.value,
                "ci95": None if d.ci_low is None else [d.ci_low, d.ci_high],
                "p": d.p,
                "p_holm": d.p_holm,
                "significant": d.significant,
                "improvement": d.improvement,
                "method": d.method,
                "n_paired": d.n,
                "discordant": None if d.discordant is None else list(d.discordant),
                "unpaired_reason": d.note or None,
            }
    return out


def run_samples(run_dir: Path, stages: list[str]) -> Samples:
    """Per-item records of every stage's evaluation in a pipeline run (``eval/<stage>/samples/``)."""
    from alignment.evaluation.paired import load_samples

    return {stage: load_samples(run_dir / "eval" / stage) for stage in stages}


def build_report(
    name: str,
    stage_results: dict[str, dict[str, Any]],
    stage_records: dict[str, dict[str, Any] | None],
    provenance: dict[str, Any],
    config: ReportConfig | None = None,
    samples: Samples | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Assemble the report content and its figures (PNG bytes); nothing is written.

    ``stage_results`` is ordered: the first stage is the base every other stage is compared with.
    ``samples`` (stage -> suite -> per-item records) lets changes be paired item by item.
    """
    config = config or ReportConfig()
    stages = list(stage_results)
    base = stages[0]
    rows = comparison_rows(stage_results, config, samples)
    verdicts = {s: dataclasses.asdict(verdict(s, rows, base)) for s in stages[1:]}
    first = next(iter(stage_results.values()))
    backends = {}
    for results in stage_results.values():
        for suite, info in results.get("suites", {}).items():
            for role, backend in (info.get("backends") or {}).items():
                backends[f"{suite}.{role}"] = backend
    provenance = {**provenance, "scorer_backends": backends}
    report = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stages,
        "base": base,
        "preset": first.get("preset"),
        "seed": first.get("seed"),
        "split": first.get("split"),
        "config": dataclasses.asdict(config),
        "statistics": {
            "alpha": ALPHA,
            "ci_level": 0.95,
            "resamples": config.resamples,
            "bootstrap_seed": first.get("seed"),
            "paired": "same items in base and stage, matched by item id; McNemar exact for proportions of "
            "0/1 outcomes, else a paired (cluster) bootstrap",
            "multiplicity": "Holm across each stage's bias measures; retention measures a second family",
        },
        "rows": [_row_json(r, stages, base) for r in rows],
        "verdicts": verdicts,
        "training": {s: _training_info(stage_records.get(s)) for s in stages},
        "provenance": provenance,
        "_rows": rows,
    }
    figures = {
        "tradeoff": plots.tradeoff_plot(rows, stages),
        "crows_pairs_by_type": plots.category_bars(
            breakdown(stage_results, "crows_pairs", "pct_stereotype", "bias_type"),
            stages,
            "CrowS-Pairs: % pairs where the stereotype is more likely",
            "pct_stereotype (%)",
            50.0,
        ),
        "stereoset_by_domain": plots.category_bars(
            breakdown(stage_results, "stereoset", "ss", "domain"),
            stages,
            "StereoSet: stereotype score by domain",
            "SS (%)",
            50.0,
        ),
        "training_curves": plots.training_curves({s: r for s, r in stage_records.items() if r}),
    }
    return report, {k: v for k, v in figures.items() if v is not None}


def write_report(
    run_dir: str | Path,
    name: str,
    stage_results: dict[str, dict[str, Any]],
    stage_records: dict[str, dict[str, Any] | None],
    provenance: dict[str, Any],
    config: ReportConfig | None = None,
    samples: Samples | None = None,
) -> dict[str, Any]:
    """Build the report; write ``metrics.json``, ``report.md`` (+ ``report_files/``) and ``report.html``.

    Without ``samples``, each stage's per-item records are read from ``run_dir/eval/<stage>/samples/``
    (where the pipeline's evaluations write them).
    """
    run_dir = Path(run_dir)
    if samples is None:
        samples = run_samples(run_dir, list(stage_results))
    report, figures = build_report(name, stage_results, stage_records, provenance, config, samples)
    images = {}
    for figure, png in figures.items():
        atomic_write_bytes(run_dir / "report_files" / f"{figure}.png", png)
        images[figure] = f"report_files/{figure}.png"
    atomic_write_text(run_dir / "report.md", render.markdown_report(report, images))
    atomic_write_text(run_dir / "report.html", render.html_report(report, figures))
    atomic_write_json(run_dir / "metrics.json", {k: v for k, v in report.items() if k != "_rows"})
    return report


def print_report(report: dict[str, Any]) -> None:
    """The comparison table and verdicts in the terminal."""
    from alignment.console import out

    out.print(render.rich_table(report["_rows"], report["stages"], f"safealign: {report['name']}"))
    for stage, v in report["verdicts"].items():
        colour = "red" if v["capability_losses"] else "green"
        out.print(f"[bold]{stage}[/]: [{colour}]{v['text']}[/]")
