"""Bootstrap intervals, deterministic stratified subsampling and presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignment.errors import SafealignError
from alignment.evaluation.presets import builtin_presets, load_preset
from alignment.evaluation.registry import load_suites, parse_suite_list
from alignment.evaluation.stats import mean_ci, statistic_ci
from alignment.evaluation.subsample import allocate, subsample


def test_mean_ci_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    a, b = mean_ci(values, seed=3), mean_ci(values, seed=3)
    assert a == b
    assert a.value == pytest.approx(values.mean())
    assert a.low < a.value < a.high
    # The percentile interval of a mean is about +-1.96 standard errors.
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (a.high - a.low) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_coverage_of_a_known_proportion():
    """95% intervals of Bernoulli(0.3) samples contain 0.3 about 95% of the time."""
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        est = mean_ci(rng.random(150) < 0.3, seed=trial, resamples=400)
        hits += est.low <= 0.3 <= est.high
    assert 0.88 <= hits / 200 <= 0.99


def test_statistic_ci_and_cluster_resampling():
    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    est = statistic_ci(lambda idx: float(values[idx].mean()), 6, seed=0)
    assert est.value == 0.5 and est.n == 6
    # Two clusters of identical values: a resample is all-ones, all-zeros or half; nothing in between.
    clustered = statistic_ci(lambda idx: float(values[idx].mean()), 6, clusters=list("aaabbb"), seed=0)
    assert clustered.low == 0.0 and clustered.high == 1.0
    nan = statistic_ci(lambda idx: float("nan"), 3)
    assert nan.low is None and nan.high is None
    assert statistic_ci(lambda idx: 0.0, 0).n == 0


def test_subsample_is_deterministic_nested_and_stratified():
    items = [{"id": f"x{i}", "cat": "a" if i < 90 else "b"} for i in range(100)]
    pick = lambda n, seed=0: subsample(items, n, key=lambda x: x["id"], strata=lambda x: x["cat"], seed=seed)  # noqa: E731
    ten = pick(10)
    assert ten == pick(10)
    assert [x["cat"] for x in ten].count("b") == 1  # proportional: 9 + 1
    assert {x["id"] for x in ten} <= {x["id"] for x in pick(30)}  # a larger limit adds items
    assert pick(10, seed=1) != ten
    assert ten == sorted(ten, key=lambda x: int(x["id"][1:]))  # original order kept
    assert pick(None) == items and pick(1000) == items
    assert sum(allocate({"a": 5, "b": 0, "c": 2}, 3).values()) == 3


def test_presets_and_suite_lists():
    presets = builtin_presets()
    assert {"quick", "standard", "full"} <= set(presets)
    suites = load_suites()
    for preset in presets.values():
        assert set(preset.limits) <= set(suites)
    assert load_preset("quick").limit("crows_pairs") > 0
    assert load_preset("full").limit("crows_pairs") is None
    assert parse_suite_list("crows_pairs, stereoset,crows_pairs") == ["crows_pairs", "stereoset"]
    assert parse_suite_list("all") == list(suites)
    with pytest.raises(
        SafealignError, match="unknown suite 'crows_pair' \\(did you mean 'crows_pairs'\\?\\)"
    ):
        parse_suite_list("crows_pair")
    with pytest.raises(SafealignError, match="unknown preset"):
        load_preset("fast")


def test_preset_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("mine:\n  suites: [crows_pairs]\n  limits: {crows_pairs: 5}\n", encoding="utf-8")
    with pytest.raises(SafealignError, match="unknown keys"):
        load_preset(str(path))
    path.write_text("suites: [crows_pairs]\nlimits: {crows_pairs: 5}\noptions: {honest: {num_samples: 1}}\n")
    preset = load_preset(str(path))
    assert preset.suites == ("crows_pairs",) and preset.limit("crows_pairs") == 5
    assert preset.suite_options("honest")["num_samples"] == 1
    path.write_text("limits: {crowspairs: 5}\n")
    with pytest.raises(SafealignError, match="unknown suite 'crowspairs'"):
        load_preset(str(path))


def test_the_recipes_preset_files_load():
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    rtp = load_preset(str(recipes / "smollm2-135m-instruct" / "eval-rtp-toxicity.yaml"))
    assert rtp.suites == ("toxicity",) and rtp.limit("toxicity") is None
    assert rtp.suite_options("toxicity")["sources"] == ["rtp"]
    assert rtp.suite_options("toxicity")["num_samples"] == 4


def test_every_metric_has_metadata_and_docs():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text(encoding="utf-8")
    for spec in load_suites().values():
        assert any(info.headline for info in spec.metrics.values()), spec.name
        assert f"`{spec.name}`" in docs, spec.name
        for metric in spec.metrics:
            assert f"`{metric}`" in docs, f"{spec.name}.{metric} is not in docs/metrics.md"
