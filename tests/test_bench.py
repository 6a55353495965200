"""The shared benchmark record (bench.record) and the bench/ benchmarks on the tiny model.

No timing assertions: only that the statistics, the record and the measurements are right. bench/ lives
at the repository root, outside the installed packages; pytest puts the root on ``sys.path``
(``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bench.record as bench_record
from alignment.errors import SafealignError

RECORD_KEYS = {
    "benchmark",
    "created_at",
    "command",
    "process_wall_s",
    "machine",
    "versions",
    "n",
    "unit",
    "variants",
    "ratios",
    "params",
    "details",
}


def test_summarize_matches_a_hand_computation():
    s = bench_record.summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    # sorted 1 2 3 4 10: median the middle one; inclusive quartiles at positions 1 and 3 of 0..4
    assert (s["n"], s["median"], s["min"], s["max"], s["q1"], s["q3"]) == (5, 3.0, 1.0, 10.0, 2.0, 4.0)
    s = bench_record.summarize([0.5, 0.25])
    assert (s["median"], s["q1"], s["q3"]) == (0.375, 0.3125, 0.4375)
    assert bench_record.ratio({"median": 3.0}, {"median": 4.0}) == 0.75
    assert bench_record.ratio({"median": 3.0}, {"median": 0.0}) is None
    with pytest.raises(ValueError):
        bench_record.summarize([])


def test_time_alternating_warms_up_then_takes_turns():
    calls: list[str] = []
    variants = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    wall, cpu = bench_record.time_alternating(variants, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {k: len(v) for k, v in wall.items()} == {"a": 3, "b": 3} == {k: len(v) for k, v in cpu.items()}
    assert all(t >= 0 for ts in wall.values() for t in ts)


def test_record_schema_and_atomic_write(tmp_path, monkeypatch):
    variants = {"fast": bench_record.summarize([1.0, 2.0]), "slow": bench_record.summarize([4.0, 6.0])}
    record = bench_record.make_record(
        "demo", variants, n=2, ratios={"slow / fast": bench_record.ratio(variants["slow"], variants["fast"])}
    )
    assert set(record) == RECORD_KEYS
    assert record["ratios"] == {"slow / fast": 3.333}
    assert {"cpu_model", "cores", "ram_gb", "torch_threads"} <= set(record["machine"])
    assert {"torch", "transformers", "trl", "peft", "safealign_commit"} <= set(record["versions"])
    target = bench_record.write_record(record, tmp_path / "results" / "demo.json")
    assert json.loads(target.read_text()) == record
    # a write that fails (here: the final rename) leaves the previous record intact and no temporary file
    import alignment.io

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alignment.io.os, "replace", full_disk)
    with pytest.raises((OSError, SafealignError)):  # the disk-full error becomes a one-line SafealignError
        bench_record.write_record({**record, "n": 99}, target)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == record
    assert [p.name for p in target.parent.iterdir()] == ["demo.json"]
    assert bench_record.results_path("demo") == Path("bench/results/demo.json")


def test_memory_measure_reads_the_child_peak_rss(tmp_path):
    from bench.memory import measure

    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    big = measure([sys.executable, "-c", grow], tmp_path / "big.log")
    small = measure([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert big["returncode"] == 0 and small["returncode"] == 0
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 250
    failed = measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "failed.log")
    assert failed["returncode"] == 3


def test_tree_memory_adds_up_processes_alive_together(tmp_path):
    from bench.tree_memory import main

    hold = "import time; b = bytearray({} * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    both = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {hold.format(300)!r}]); "
    both += f"exec({hold.format(200)!r}); p.wait()"
    out = tmp_path / "tree.json"
    assert main(["--out", str(out), "--interval", "0.1", "--", sys.executable, "-c", both]) == 0
    record = json.loads(out.read_text())
    assert 500 < record["peak_tree_rss_mb"] < 700  # 300 + 200 MiB held at once, plus two interpreters
    assert max(record["peak_rss_by_process_mb"].values()) < 400  # no single process held both


def test_stage_benchmark_on_the_tiny_model(tiny_model, tmp_path, capsys):
    import torch

    from bench import stages

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "stages.json"
        code = stages.main(
            ["--model", tiny_model, "--runs", "1", "--steps", "3", "--batch-size", "2", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    record = json.loads(out.read_text())
    assert set(record) == RECORD_KEYS and record["benchmark"] == "stages" and record["unit"] == "s/step"
    assert set(record["variants"]) == {"sft/ours", "sft/bare", "dpo/ours", "dpo/bare"}
    for summary in record["variants"].values():
        assert summary["n"] == 2 and summary["min"] <= summary["median"] <= summary["max"]
    assert set(record["ratios"]) == {"sft: ours / bare", "dpo: ours / bare"}
    assert all(r > 0 for r in record["ratios"].values())
    assert record["params"]["batch_size"] == 2 and record["n"] == 2
    assert "sft/ours" in capsys.readouterr().out


def test_eval_benchmark_reports_all_three_modes(tiny_model, tmp_path, monkeypatch):
    from bench import eval as eval_bench

    monkeypatch.delenv("SAFEALIGN_DATA_DIR", raising=False)
    out = tmp_path / "eval.json"
    argv = ["--model", tiny_model, "--n", "6", "--items", "0", "--repeats", "1", "--out", str(out)]
    assert eval_bench.main(argv) == 0
    record = json.loads(out.read_text())
    assert set(record) == RECORD_KEYS and record["benchmark"] == "eval"
    assert set(record["variants"]) == {"sentences/engine", "sentences/bare", "sentences/loop"}
    assert record["ratios"]["sentences: engine / loop (cpu time)"] > 0
    assert record["details"]["sentences"]["requests"] == 6


def test_reward_benchmark_times_each_scorer_batched_and_one_by_one(tmp_path, monkeypatch, capsys):
    from bench import reward

    monkeypatch.delenv("SAFEALIGN_DATA_DIR", raising=False)  # the built-in sentences
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))  # no trained stereotype classifier
    out = tmp_path / "reward.json"
    argv = ["--scorers", "profanity", "-n", "4", "--batch-size", "2", "--repeats", "2", "--out", str(out)]
    assert reward.main(argv) == 0
    record = json.loads(out.read_text())
    assert set(record) == RECORD_KEYS and record["benchmark"] == "reward" and record["unit"] == "texts/s"
    assert set(record["variants"]) == {"profanity/batched", "profanity/one-by-one"}
    assert all(s["n"] == 2 for s in record["variants"].values())
    assert record["params"] == {"texts": 4, "batch_size": 2, "scorers": ["profanity"]}
    assert "profanity/batched" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "args", "named"),
    [
        ("reward", ["--scorers", "nope"], "unknown toxicity scorer 'nope'"),
        ("eval", ["--model", "no-such"], "no-such"),
    ],
)
def test_a_benchmark_given_bad_input_fails_with_one_line(module, args, named, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench.{module}: error: ") and named in lines[0]
    assert not (tmp_path / "r.json").exists()


def test_mcnemar_sample_size_gives_the_stated_power():
    """Simulated paired 0/1 outcomes at the size the formula asks for are detected about 80% of the time
    by the exact McNemar test (scipy's binomial test on the discordant items)."""
    from scipy.stats import binomtest

    from bench.eval_power import mcnemar_n

    discordance, change = 0.10, 0.05
    n = mcnemar_n(discordance, change)
    rng = np.random.default_rng(0)
    probabilities = [(discordance - change) / 2, (discordance + change) / 2, 1 - discordance]
    hits = 0
    for _ in range(400):
        down, up, _same = rng.multinomial(n, probabilities)
        hits += binomtest(int(up), int(down + up), 0.5).pvalue < 0.05
    assert 0.72 < hits / 400 < 0.88


def test_eval_power_counts_flips_between_two_evaluations(tmp_path):
    from bench.eval_power import power_table

    base = [{"id": i, "acc_norm": i % 2} for i in range(200)]  # 100 right
    stage = [{"id": i, "acc_norm": (i % 2) if i >= 20 else 1} for i in range(200)]  # 10 wrong -> right
    for folder, records in (("base", base), ("stage", stage)):
        (tmp_path / folder / "samples").mkdir(parents=True)
        lines = "".join(json.dumps(r) + "\n" for r in records)
        (tmp_path / folder / "samples" / "hellaswag.jsonl").write_text(lines)
    row = power_table(tmp_path / "base", tmp_path / "stage", 1.5)["metrics"]["hellaswag/acc_norm"]
    assert (row["n"], row["flips_down"], row["flips_up"], row["discordance"]) == (200, 0, 10, 0.05)


def test_dtype_benchmark_counts_items_whose_decision_changed(tmp_path):
    from bench.dtype import flips

    for name, decisions in (("a", [True, False, True, False]), ("b", [True, True, True, True])):
        (tmp_path / name / "samples").mkdir(parents=True)
        rows = [{"id": str(i), "stereotyped": d, "ll_more": -1.0} for i, d in enumerate(decisions)]
        (tmp_path / name / "samples" / "crows_pairs.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    assert flips(tmp_path / "a", tmp_path / "b", "crows_pairs") == {"items": 4, "stereotyped": 2}
