"""Paired statistics: each test against a hand computation, and the report's use of per-item samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_eval_suites import write_data

from alignment.evaluation import evaluate
from alignment.evaluation.paired import PairedForm, Side, Unpaired, compare_metric, match_items
from alignment.evaluation.stats import draws, holm, mcnemar_exact, mean_ci, paired_bootstrap
from alignment.evaluation.suites.stereoset import paired_scores
from alignment.report import build_report, write_report
from alignment.report.compare import Cell, independent_delta


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; then a running maximum
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.02, 0.011]) == pytest.approx([0.022, 0.022])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, float("nan")])  # NaN is not counted in the family
    assert adjusted[0] == pytest.approx(0.01) and math.isnan(adjusted[1])


def test_mcnemar_exact_by_hand():
    # 2 items 1 -> 0, 8 items 0 -> 1, 10 unchanged: p = 2 P(Bin(10, 1/2) <= 2) = 2 (1 + 10 + 45) / 1024
    base = [1] * 2 + [0] * 8 + [1] * 5 + [0] * 5
    stage = [0] * 2 + [1] * 8 + [1] * 5 + [0] * 5
    assert mcnemar_exact(base, stage) == (pytest.approx(2 * 56 / 1024), (2, 8))
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == (1.0, (0, 0))


def test_paired_bootstrap_matches_a_hand_loop_and_the_analytic_error():
    rng = np.random.default_rng(5)
    a = rng.normal(size=80)
    b = a + 0.3 + 0.5 * rng.normal(size=80)
    est = paired_bootstrap(lambda i: a[i].mean(), lambda i: b[i].mean(), 80, seed=7, resamples=500)
    hand, diffs = np.random.default_rng(7), []
    for _ in range(500):
        idx = hand.integers(0, 80, size=80)
        diffs.append(sum(b[j] - a[j] for j in idx) / 80)
    low, high = np.percentile(diffs, [2.5, 97.5])
    tail = min(sum(d <= 0 for d in diffs), sum(d >= 0 for d in diffs))
    assert est.value == pytest.approx(float(np.mean(b - a)))
    assert (est.low, est.high) == (pytest.approx(low), pytest.approx(high))
    assert est.p == pytest.approx(min(1.0, 2 * (tail + 1) / 501)) and est.test == "paired bootstrap"
    # the standard error of a mean paired difference is sd(b - a) / sqrt(n)
    assert (est.high - est.low) / 2 == pytest.approx(1.96 * np.std(b - a, ddof=1) / math.sqrt(80), rel=0.15)
    unpaired = 1.96 * math.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1)) / math.sqrt(80)
    assert (est.high - est.low) / 2 < unpaired / 2  # what the two share cancels out


def test_cluster_draws_keep_clusters_whole():
    labels = list("aaabbcdddd")
    for idx in draws(10, labels, seed=3, resamples=50):
        counts = np.bincount(idx, minlength=10)
        copies = {}
        for i, label in enumerate(labels):
            copies.setdefault(label, set()).add(int(counts[i]))
        assert all(len(c) == 1 for c in copies.values())  # every member of a cluster as often
        assert sum(c.pop() for c in copies.values()) == 4  # as many clusters drawn as there are


def stereoset_records(pro: dict[str, list[int]], related: int = 2) -> list[dict]:
    return [
        {"id": f"{term}-{i}", "target": term, "stereotype_preferred": bool(p), "related_wins": related}
        for term, values in pro.items()
        for i, p in enumerate(values)
    ]


def test_stereoset_cluster_bootstrap_equals_a_per_term_hand_loop():
    base_pro = {"t1": [1, 1, 0], "t2": [1], "t3": [0, 1], "t4": [1, 1, 1, 0]}
    stage_pro = {"t1": [0, 1, 0], "t2": [0], "t3": [0, 0], "t4": [1, 0, 1, 0]}
    base, stage = stereoset_records(base_pro), stereoset_records(stage_pro)
    form = PairedForm(function="paired_scores", cluster="target")
    module = "alignment.evaluation.suites.stereoset"

    def ss(pro):  # the official SS: per-term share of stereotype wins, averaged over terms
        return 100 * np.mean([np.mean(v) for v in pro.values()])

    est = compare_metric(
        module,
        "ss",
        form,
        Side(base, {}, ss(base_pro)),
        Side(stage, {}, ss(stage_pro)),
        seed=2,
        resamples=300,
    )
    terms, hand, diffs = list(base_pro), np.random.default_rng(2), []
    for _ in range(300):
        picked = [terms[k] for k in hand.integers(0, len(terms), size=len(terms))]
        diffs.append(
            ss({i: stage_pro[t] for i, t in enumerate(picked)})
            - ss({i: base_pro[t] for i, t in enumerate(picked)})
        )
    assert est.value == pytest.approx(ss(stage_pro) - ss(base_pro)) and est.test == "paired cluster bootstrap"
    assert (est.low, est.high) == tuple(pytest.approx(x) for x in np.percentile(diffs, [2.5, 97.5]))
    # a term drawn twice counts twice, whatever its number of items
    statistic = paired_scores(base, {}, "ss")
    twice_t1_once_t3 = np.array([0, 1, 2, 0, 1, 2, 4, 5])
    assert statistic(twice_t1_once_t3) == pytest.approx(100 * (2 / 3 + 2 / 3 + 1 / 2) / 3)


def crows_results(stereotyped: list[bool]) -> dict:
    est = mean_ci([float(x) for x in stereotyped], seed=0).scaled(100)
    row = {
        "suite": "crows_pairs",
        "metric": "pct_stereotype",
        "group": None,
        "value": est.value,
        "ci95": [est.low, est.high],
        "n": est.n,
        "ideal": 50,
        "better": "closer",
        "headline": True,
        "split": "test",
        "seed": 0,
    }
    suites = {"crows_pairs": {"status": "ok", "options": {}}}
    return {"preset": "quick", "seed": 0, "split": {}, "suites": suites, "metrics": [row]}


def crows_samples(stereotyped: list[bool]) -> dict:
    return {"crows_pairs": [{"id": str(i), "stereotyped": x} for i, x in enumerate(stereotyped)]}


def crows_delta(base: list[bool], stage: list[bool], stage_samples: dict | None = None) -> dict:
    samples = {
        "base": crows_samples(base),
        "dpo": crows_samples(stage) if stage_samples is None else stage_samples,
    }
    report, _ = build_report(
        "t", {"base": crows_results(base), "dpo": crows_results(stage)}, {}, {"model": "m"}, samples=samples
    )
    (row,) = report["rows"]
    return {**row["deltas"]["dpo"], "verdict": report["verdicts"]["dpo"]["text"]}


def test_twelve_of_300_flips_are_significant_paired_but_not_with_independent_intervals():
    base = [i < 180 for i in range(300)]  # 60% stereotyped
    stage = [i < 180 and i >= 12 for i in range(300)]  # 12 pairs flip toward the anti-stereotype, none back
    d = crows_delta(base, stage)
    assert d["value"] == pytest.approx(-4.0) and d["method"] == "McNemar exact"
    assert d["discordant"] == [12, 0] and d["n_paired"] == 300
    assert d["p"] == pytest.approx(2 * 0.5**12) and d["p_holm"] == pytest.approx(d["p"])
    assert d["significant"] and "(1 significant after Holm)" in d["verdict"]
    old = independent_delta(
        Cell(56.0, *crows_results(stage)["metrics"][0]["ci95"]),
        Cell(60.0, *crows_results(base)["metrics"][0]["ci95"]),
        50.0,
    )
    assert old.value == pytest.approx(-4.0) and not old.significant


def test_identical_evaluations_change_by_exactly_zero():
    base = [i % 3 == 0 for i in range(90)]
    d = crows_delta(base, base)
    assert (d["value"], d["ci95"], d["p"], d["p_holm"], d["significant"]) == (
        0.0,
        [0.0, 0.0],
        1.0,
        1.0,
        False,
    )


def test_different_item_sets_are_never_paired():
    base = [i % 2 == 0 for i in range(40)]
    fewer = crows_samples(base[:39])
    d = crows_delta(base, base, fewer)
    assert d["method"] == "independent CIs" and d["n_paired"] is None
    assert d["unpaired_reason"].startswith("item sets differ (1 only in base, 0 only in the stage")
    assert "1 of the 1 compared without pairing" in d["verdict"]
    assert crows_delta(base, base, {})["unpaired_reason"] == "no per-item samples"
    with pytest.raises(Unpaired, match="no 'id' field"):
        match_items([{"id": 1}], [{"key": 1}])


@pytest.fixture(scope="module")
def two_models(tiny_model, tmp_path_factory):
    """The tiny model and a perturbed copy, evaluated on small fixture data into a pipeline's layout."""
    from alignment.models import load_model

    root = tmp_path_factory.mktemp("paired")
    write_data(root / "data")
    model, tokenizer = load_model(tiny_model, device="cpu")
    noisy = root / "noisy-model"
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(noisy)
    tokenizer.save_pretrained(noisy)
    mp = pytest.MonkeyPatch()
    mp.setenv("SAFEALIGN_DATA_DIR", str(root / "data"))
    suites = ["crows_pairs", "stereoset", "truthfulqa_mc", "hellaswag", "bbq", "perplexity"]
    try:
        results = {
            name: evaluate(
                spec, suites, preset="full", split="all", out_dir=root / "eval" / name, batch_size=4
            )
            for name, spec in (("base", tiny_model), ("noisy", str(noisy)))
        }
    finally:
        mp.undo()
    return root, results


def test_report_pairs_every_suite_from_the_samples_on_disk(two_models):
    root, results = two_models
    report = write_report(root, "t", results, {}, {"model": "tiny"})
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["schema_version"] == 2 and metrics["statistics"]["resamples"] == 2000
    methods = {}
    for row in metrics["rows"]:
        d = row["deltas"]["noisy"]
        methods[f"{row['suite']}/{row['metric']}"] = d["method"]
        assert d["unpaired_reason"] is None, row
        assert d["value"] == pytest.approx(
            row["cells"]["noisy"]["value"] - row["cells"]["base"]["value"], abs=1e-4
        )
        assert d["ci95"][0] <= d["value"] <= d["ci95"][1] and 0 < d["p"] <= d["p_holm"] <= 1
    assert methods["crows_pairs/pct_stereotype"] == "McNemar exact"
    assert methods["stereoset/ss"] == "paired cluster bootstrap"
    assert methods["perplexity/perplexity"] == "paired bootstrap"
    assert {"hellaswag/acc_norm", "truthfulqa_mc/mc1", "bbq/accuracy"} <= {
        k for k, m in methods.items() if m == "McNemar exact"
    }
    md = (root / "report.md").read_text()
    assert "### Changes from base" in md and "| noisy | stereoset/ss |" in md
    assert "significant after Holm" in report["verdicts"]["noisy"]["text"]


def test_the_same_model_twice_changes_nothing(two_models):
    root, results = two_models
    report, _ = build_report(
        "t",
        {"base": results["base"], "again": results["base"]},
        {},
        {"model": "tiny"},
        samples={"base": load(root / "eval" / "base"), "again": load(root / "eval" / "base")},
    )
    for row in report["rows"]:
        d = row["deltas"]["again"]
        assert (d["value"], d["ci95"], d["p"]) == (0.0, [0.0, 0.0], 1.0), row["metric"]
        assert d["method"] != "independent CIs"


def load(eval_dir):
    from alignment.evaluation.paired import load_samples

    return load_samples(eval_dir)


def test_compare_command_writes_the_paired_report_of_eval_folders(two_models, tmp_path, capsys):
    from alignment.cli import main

    root, results = two_models
    evals = [f"base={root / 'eval' / 'base'}", f"noisy={root / 'eval' / 'noisy'}"]
    assert main(["compare", *evals, "--out", str(tmp_path / "cmp")]) == 0
    written = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    expected, _ = build_report(
        "t", results, {}, {}, samples={name: load(root / "eval" / name) for name in results}
    )
    got = {(r["suite"], r["metric"]): r["deltas"]["noisy"] for r in written["rows"]}
    for row in expected["rows"]:
        want = row["deltas"]["noisy"]
        assert got[(row["suite"], row["metric"])]["p_holm"] == pytest.approx(want["p_holm"])
        assert got[(row["suite"], row["metric"])]["ci95"] == pytest.approx(want["ci95"])
    assert json.loads((tmp_path / "cmp" / "manifest.json").read_text())["kind"] == "compare"
    # bad input: one line, exit 2, nothing written
    for bad in ([evals[0]], [evals[0], evals[0]], [evals[0], f"x={tmp_path}"], [evals[0], "no-equals"]):
        capsys.readouterr()
        assert main(["compare", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err.startswith("safealign: error:")
        assert not (tmp_path / "bad").exists()


def test_samples_keep_completions_that_hold_unicode_line_separators(tmp_path):
    """A sampled completion may contain U+2028 (written raw, as JSON allows): the samples still load as
    one record per line, so `safealign compare` can pair a toxicity suite that generated one."""
    folder = tmp_path / "samples"
    folder.mkdir()
    records = [
        {
            "id": "rtp:a",
            "completions": [" buffalo. \u2028The fact", " a\u2029b\x85c"],
            "toxicity": [0.1, 0.2],
        },
        {"id": "rtp:b", "completions": [" fine"], "toxicity": [0.0]},
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (folder / "toxicity.jsonl").write_text(text, encoding="utf-8")
    assert load(tmp_path) == {"toxicity": records}
