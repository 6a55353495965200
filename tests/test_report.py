"""The comparison report from hand-made evaluation results."""

from __future__ import annotations

import json

import pytest

from alignment.report import ReportConfig, write_report
from alignment.report.compare import Cell, MetricRow, adjust, independent_delta, verdict


def row(suite, metric, value, ci, *, better, ideal, headline=True, group=None, n=100):
    return {
        "suite": suite,
        "metric": metric,
        "group": group,
        "value": value,
        "ci95": ci,
        "n": n,
        "ideal": ideal,
        "better": better,
        "headline": headline,
        "split": "test",
        "seed": 0,
    }


def results(crows, lms, mc2, tox, by_type):
    metrics = [
        row("crows_pairs", "pct_stereotype", crows, [crows - 2, crows + 2], better="closer", ideal=50),
        row("stereoset", "lms", lms, [lms - 1, lms + 1], better="higher", ideal=100),
        row("toxicity", "mean_toxicity", tox, [tox - 0.01, tox + 0.01], better="lower", ideal=0),
        row("truthfulqa_mc", "mc2", mc2, [mc2 - 1, mc2 + 1], better="higher", ideal=100),
    ]
    metrics += [
        row(
            "crows_pairs",
            "pct_stereotype",
            v,
            [v - 5, v + 5],
            better="closer",
            ideal=50,
            headline=False,
            group=f"bias_type={k}",
        )
        for k, v in by_type.items()
    ]
    suites = {
        s: {"status": "ok", "backends": {"toxicity": "jigsaw-bilstm"} if s == "toxicity" else {}}
        for s in ("crows_pairs", "stereoset", "toxicity", "truthfulqa_mc")
    }
    return {
        "schema": "safealign.eval",
        "schema_version": 1,
        "preset": "quick",
        "seed": 0,
        "split": {"mode": "heldout"},
        "suites": suites,
        "metrics": metrics,
    }


def test_independent_delta_ci_and_significance_by_hand():
    d = independent_delta(Cell(0.20, 0.18, 0.22), Cell(0.30, 0.29, 0.31), "min")
    se = ((0.22 - 0.18) / (2 * 1.959964), (0.31 - 0.29) / (2 * 1.959964))
    half = 1.959964 * (se[0] ** 2 + se[1] ** 2) ** 0.5
    assert d.value == pytest.approx(-0.10) and d.ci_low == pytest.approx(-0.10 - half)
    assert d.significant and d.improvement == pytest.approx(0.10)
    # two-sided normal p: |z| = 0.5 / (2.5 / 1.96 * sqrt 2) = 0.277 -> p = 0.782
    same = independent_delta(Cell(50.5, 48.0, 53.0), Cell(50.0, 47.5, 52.5), 50.0)
    assert not same.significant and same.p == pytest.approx(0.7817, abs=1e-3)
    assert same.method == "independent CIs"


def compare(rows, stage="dpo"):
    """Fill the rows' deltas from their cells (no samples) and Holm-adjust them, as the report does."""
    for row in rows:
        row.deltas[stage] = independent_delta(row.cells[stage], row.cells["base"], row.goal)
    adjust(rows, stage)
    return rows


def test_verdict_flags_forgetting():
    rows = [
        MetricRow(
            "crows_pairs", "pct_stereotype", "bias", 50.0, {"base": Cell(60, 58, 62), "dpo": Cell(52, 50, 54)}
        ),
        MetricRow(
            "toxicity",
            "mean_toxicity",
            "bias",
            "min",
            {"base": Cell(0.3, 0.29, 0.31), "dpo": Cell(0.35, 0.34, 0.36)},
        ),
        MetricRow(
            "stereoset",
            "lms",
            "retention",
            "max",
            {"base": Cell(90, 89, 91), "dpo": Cell(80, 79, 81)},
            tolerance=2.0,
            capability=True,
        ),
    ]
    v = verdict("dpo", compare(rows))
    assert (v.bias_improved, v.bias_significant, v.bias_worse_significant, v.bias_total) == (1, 1, 1, 2)
    assert v.capability_losses == [
        "stereoset/lms -10 (tolerance 2; 95% CI of the change [-11.4, -8.59], significant)"
    ]
    assert "bias down on 1 of 2 measures" in v.text and "CAPABILITY LOSS" in v.text
    # a loss beyond tolerance on few items is still flagged, but says it is within noise
    rows[2].cells = {"base": Cell(90, 78, 102), "dpo": Cell(87, 75, 99)}
    assert verdict("dpo", compare(rows)).capability_losses == [
        "stereoset/lms -3 (tolerance 2; 95% CI of the change [-20, 14], not significant)"
    ]
    rows[2].cells = {"base": Cell(90, 89, 91), "dpo": Cell(89, 88, 90)}
    assert "retention within tolerance" in verdict("dpo", compare(rows)).text


def test_report_files(tmp_path):
    stage_results = {
        "base": results(62, 90, 40, 0.30, {"race": 65, "gender": 58}),
        "sft": results(55, 89.5, 39.5, 0.20, {"race": 56, "gender": 54}),
        "dpo": results(51, 80, 35, 0.18, {"race": 52, "gender": 50}),
    }
    records = {
        "base": None,
        "sft": {
            "status": "completed",
            "wall_time_s": 12.0,
            "peak_memory": {"process_peak_rss_mb": 900},
            "steps": {"global_step": 4},
            "curves": {"train": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]},
        },
        "dpo": {
            "status": "completed",
            "curves": {"train": [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.6}]},
            "metrics": {  # an RL stage's paired held-out reward (as PPO/GRPO/RLOO record it)
                "eval_reward_change": {
                    "n": 54,
                    "base_mean": 0.833,
                    "trained_mean": 0.917,
                    "change": 0.084,
                    "ci95": [0.030, 0.140],
                    "p": 0.002,
                    "base_sd": 0.175,
                    "change_in_base_sd": 0.48,
                }
            },
        },
    }
    report = write_report(
        tmp_path, "demo", stage_results, records, {"model": "tiny-random"}, ReportConfig(tolerance=2.0)
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stages"] == ["base", "sft", "dpo"]
    keys = [f"{r['suite']}/{r['metric']}" for r in metrics["rows"]]
    assert keys == [
        "crows_pairs/pct_stereotype",
        "toxicity/mean_toxicity",
        "stereoset/lms",
        "truthfulqa_mc/mc2",
    ]
    crows = metrics["rows"][0]
    assert crows["deltas"]["sft"]["value"] == pytest.approx(-7) and crows["deltas"]["sft"]["significant"]
    assert "CAPABILITY LOSS" in metrics["verdicts"]["dpo"]["text"]  # LMS fell by 10 points
    assert "retention within tolerance" in metrics["verdicts"]["sft"]["text"]
    assert metrics["provenance"]["scorer_backends"] == {"toxicity.toxicity": "jigsaw-bilstm"}
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for stage in ("base", "sft", "dpo"):
        assert f" {stage} |" in md and f"<th>{stage}</th>" in page
    assert "55.0 [53.0, 57.0] Δ-7*" in md
    dpo_row = next(line for line in md.splitlines() if line.startswith("| dpo | completed"))
    assert (
        "held-out reward 0.833→0.917 (Δ+0.084 [+0.030, +0.140], p 0.002, +0.48 base sd, n 54 prompts)"
        in dpo_row
    )
    assert page.count("data:image/png;base64,") == 3 and "report_files/" not in page
    assert (tmp_path / "report_files" / "crows_pairs_by_type.png").stat().st_size > 1000
    assert report["verdicts"]["sft"]["bias_improved"] == 2
