"""The whole pipeline on tiny-random with small real data: outputs, reruns, interruption, bad recipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignment.errors import SafealignError
from alignment.pipeline import load_pipeline

STAGE = {"per_device_train_batch_size": 4, "max_length": 512, "save_steps": 2, "logging_steps": 1}


PPO = {
    "max_steps": 2,
    "rollout_batch_size": 4,
    "per_device_train_batch_size": 4,
    "ppo_epochs": 1,
    "max_new_tokens": 8,
    "max_length": 512,
    "save_steps": 1,
    "max_eval_samples": 4,
}


def recipe(tmp_path: Path, name: str, suites: list[str] | None, max_steps: int = 4, rl: bool = False) -> Path:
    data = {
        "name": name,
        "model": "tiny-random",
        "seed": 0,
        "data": {
            "rewrites": {"kind": "sft", "source": "rewrite_pairs", "limit": 32},
            "pairs": {"kind": "preference", "source": "crows_pairs", "limit": 48},
        },
        "stages": [
            {
                "name": "sft",
                "type": "sft",
                "dataset": "rewrites",
                "config": {**STAGE, "max_steps": max_steps},
            },
            {"name": "dpo", "type": "dpo", "dataset": "pairs", "config": {**STAGE, "max_steps": max_steps}},
        ],
        "evaluation": {"preset": "quick", "limit": 4, "suites": suites},
    }
    if rl:  # the full chain: a classifier for the stereotype suite and reward, and a PPO stage
        data["data"]["prompts"] = {"kind": "prompts", "source": "rtp", "limit": 40}
        data["data"]["anchor"] = {"kind": "prompts", "source": "bold", "limit": 40}  # PPO-ptx's prompts
        data["stereotype_classifier"] = {"mode": "head", "limit": 40, "epochs": 2}
        data["reward"] = {"components": [{"reward": "non_toxic"}, {"reward": "anti_stereotype"}]}
        ptx = {"ptx_coef": 1.0, "ptx_dataset": "anchor", "ptx_samples": 8, "ptx_batch_size": 2}
        data["stages"].append({"name": "ppo", "type": "ppo", "dataset": "prompts", "config": {**PPO, **ptx}})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_whole_pipeline_reports_every_stage_and_suite_and_rerun_does_no_work(
    data_dir, tmp_path, cli, monkeypatch
):
    from alignment.evaluation import SUITES

    runs = tmp_path / "runs"
    result = cli("pipeline", "--config", recipe(tmp_path, "full", None, rl=True), "--runs-dir", runs)
    assert result.code == 0, result.err[-2000:]
    run = runs / "full"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stages"] == ["base", "sft", "dpo", "ppo"]
    suites_seen = {row["suite"] for row in metrics["rows"]}
    ran = {
        s
        for s, info in json.loads((run / "eval" / "base" / "results.json").read_text())["suites"].items()
        if info["status"] == "ok"
    }
    assert ran == suites_seen == set(SUITES)
    for row in metrics["rows"]:
        assert set(row["cells"]) == {"base", "sft", "dpo", "ppo"}
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for suite in suites_seen:
        assert suite in md and suite in page
    assert metrics["provenance"]["leakage_audit"]["passed"]
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    # the PPO stage's ptx_dataset named a key of `data`: the stage read the run's built anchor prompts
    ppo = json.loads((run / "stages" / "ppo" / "stage.json").read_text())
    assert ppo["config"]["ptx_dataset"] == str(run / "data" / "anchor") and ppo["ptx"]["prompts"] == 8

    # A rerun finds everything current: no step process starts (no training, no evaluation).
    import alignment.pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a finished step was redone: {args}")

    original = alignment.pipeline.run_safealign
    monkeypatch.setattr(alignment.pipeline, "run_safealign", forbidden)
    steps = json.loads((run / "pipeline.json").read_text())
    assert all(steps["evals"][s]["wall_s"] > 0 for s in ("base", "sft", "dpo", "ppo"))
    assert all(steps["stages"][s]["threads"] >= 1 for s in ("sft", "dpo", "ppo"))
    again = cli("pipeline", "--config", recipe(tmp_path, "full", None, rl=True), "--runs-dir", runs)
    assert again.code == 0, again.err[-2000:]
    assert json.loads((run / "metrics.json").read_text())["rows"] == metrics["rows"]

    rebuilt = cli("report", run)
    assert rebuilt.code == 0 and "ppo" in rebuilt.out

    # Saved weights deleted after the run (a disk clean-up): a rerun trains exactly those steps again
    # instead of handing the next step an empty folder, and keeps every later step and the report.
    ran: list[str] = []

    def recorded(args, what, *rest, **kwargs):
        ran.append(what)
        return original(args, what, *rest, **kwargs)

    (run / "stereotype_classifier" / "model.safetensors").unlink()
    (run / "stages" / "sft" / "model" / "model.safetensors").unlink()
    monkeypatch.setattr(alignment.pipeline, "run_safealign", recorded)
    repaired = cli("pipeline", "--config", recipe(tmp_path, "full", None, rl=True), "--runs-dir", runs)
    assert repaired.code == 0, repaired.err[-2000:]
    assert ran == ["training the stereotype classifier", "stage sft"], ran
    assert "has lost its weights; training it again" in " ".join(repaired.err.split())
    assert json.loads((run / "metrics.json").read_text())["rows"] == metrics["rows"]


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_same_metrics(data_dir, tmp_path):
    suites = ["crows_pairs", "perplexity"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = tmp_path / "runs"

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alignment",
                "pipeline",
                "--config",
                str(recipe(tmp_path, name, suites, 6)),
                "--runs-dir",
                str(runs),
                "--stages",
                "dpo",  # one stage is enough to kill: the SFT stage would only add time
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    reference = start("straight")
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-2000:]

    killed = start("killed")
    # any complete DPO checkpoint will do: on a fast machine checkpoint-2 is rotated out within moments
    checkpoints = runs / "killed" / "stages" / "dpo" / "checkpoints"
    deadline = time.monotonic() + 900
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and killed.poll() is None:
        assert time.monotonic() < deadline, "no DPO checkpoint within 900 s"
        time.sleep(0.005)
    assert killed.poll() is None, "the pipeline ended before it could be killed mid-stage"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stage = json.loads((runs / "killed" / "stages" / "dpo" / "stage.json").read_text())
    assert stage["status"] == "running"  # killed mid-stage: no chance to record anything

    resumed = start("killed")
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read()[-2000:]
    stage = json.loads((runs / "killed" / "stages" / "dpo" / "stage.json").read_text())
    assert stage["steps"]["resumed_from_step"] >= 2 and stage["steps"]["global_step"] == 6

    def values(name: str) -> dict:
        rows = json.loads((runs / name / "metrics.json").read_text())["rows"]
        return {(r["suite"], r["metric"], s): c["value"] for r in rows for s, c in r["cells"].items()}

    straight, resumed_values = values("straight"), values("killed")
    assert straight.keys() == resumed_values.keys()
    for key, value in straight.items():
        assert resumed_values[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(stagez=[]), "unknown key 'stagez' (did you mean 'stages'?)"),
        (lambda r: r["stages"][0].update(type="sfft"), "type 'sfft' is not one of"),
        (lambda r: r["stages"][0].update(dataset="nope"), "dataset: 'nope' is neither a key of 'data'"),
        (
            lambda r: r["stages"][1]["config"].update(ptx_dataset="nope"),
            "stages.dpo.config.ptx_dataset: 'nope' is neither a key of 'data'",
        ),
        (lambda r: r["evaluation"].update(limit="many"), "key 'limit'"),
        (lambda r: r["stages"].append(dict(r["stages"][0])), "stage names repeat"),
        (lambda r: r.update(evaluation=[1]), "key 'evaluation': expected a mapping"),
    ],
)
def test_bad_recipes_fail_before_any_work(tmp_path, mutate, message):
    path = recipe(tmp_path, "bad", None)
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SafealignError) as info:
        load_pipeline(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_stage_subset_override(tmp_path):
    cfg = load_pipeline(recipe(tmp_path, "x", None), {"only": "dpo", "preset": "standard", "model": "m"})
    assert (
        [s.name for s in cfg.stages] == ["dpo"] and cfg.evaluation.preset == "standard" and cfg.model == "m"
    )
    with pytest.raises(SafealignError, match="unknown stage"):
        load_pipeline(recipe(tmp_path, "x", None), {"only": "ppo"})


def test_evaluation_section_is_eval_config_with_the_pipeline_preset(tmp_path):
    from alignment.evaluation.config import EvalConfig

    path = recipe(tmp_path, "x", None)
    raw = yaml.safe_load(path.read_text())
    del raw["evaluation"]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_pipeline(path, {"eval_split": "validation"})
    assert isinstance(cfg.evaluation, EvalConfig)
    assert cfg.evaluation.preset == "pipeline" and cfg.evaluation.split == "validation"
    raw["evaluation"] = {"seed": 3}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SafealignError, match=r"key 'seed': set by the pipeline from the top-level 'seed'"):
        load_pipeline(path)


def test_every_evaluation_gets_the_run_seed_and_split(tmp_path):
    from alignment.pipeline import eval_config

    cfg = load_pipeline(recipe(tmp_path, "x", None), {"seed": 7})
    settings = eval_config(cfg, "clf-dir", "base-path")
    assert (settings.seed, settings.test_fraction, settings.val_fraction, settings.split_seed) == (
        7,
        cfg.split.test_fraction,
        cfg.split.val_fraction,
        cfg.split.seed,
    )
    assert settings.base_model == "base-path" and settings.stereotype_classifier == "clf-dir"
    assert settings.limit == 4 and settings.preset == "quick"


@pytest.mark.parametrize(
    ("requested", "env", "busy", "expected"),
    [
        (3, {}, 0.0, 3),  # the flag wins
        (None, {"SAFEALIGN_THREADS": "2", "OMP_NUM_THREADS": "1"}, 0.0, 2),
        (None, {"OMP_NUM_THREADS": "1"}, 0.0, 1),
        (None, {}, 0.2, 4),  # a quiet machine: every usable core
        (None, {}, 2.6, 1),  # others keep 2.6 of 4 cores busy: round(1.4) = 1
        (None, {}, 9.0, 1),  # never fewer than one
    ],
)
def test_threads_follow_the_free_cores(monkeypatch, requested, env, busy, expected):
    import alignment.device as device

    for name in ("SAFEALIGN_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(device, "usable_cpus", lambda: 4)
    monkeypatch.setattr(device, "busy_cpus", lambda: busy)
    assert device.choose_threads(requested)[0] == expected


def test_bad_thread_settings_are_one_line_errors(monkeypatch):
    from alignment.device import choose_threads

    monkeypatch.setenv("SAFEALIGN_THREADS", "many")
    with pytest.raises(SafealignError, match=r"\$SAFEALIGN_THREADS must be a positive whole number"):
        choose_threads()
    with pytest.raises(SafealignError, match="threads must be a positive number"):
        choose_threads(0)


def test_a_failing_step_process_fails_with_its_own_error_line(tiny_model, monkeypatch):
    from alignment.child import StepFailed, run_safealign

    with pytest.raises(SafealignError) as info:
        run_safealign(["eval", "--model", tiny_model, "--suites", "crows_pairz"], "eval base", 1)
    assert str(info.value).startswith("eval base: unknown suite 'crows_pairz'")
    assert info.value.exit_code == 2
    monkeypatch.setattr(sys, "executable", "false")  # a process that fails without an error line
    with pytest.raises(StepFailed, match="eval base: the step's process failed with exit code 1") as info:
        run_safealign(["eval"], "eval base", 1)
    assert info.value.exit_code == 1


@pytest.mark.slow
def test_evaluations_beside_training_give_the_same_report_as_one_step_at_a_time(
    data_dir, tmp_path, monkeypatch
):
    import alignment.pipeline
    from alignment.pipeline import Pipeline

    monkeypatch.setattr(alignment.pipeline, "available_memory_gb", lambda: 16.0)  # on any machine
    runs = tmp_path / "runs"
    reports = {}
    for name, overlap in (("lanes", True), ("in-turn", False)):
        cfg = load_pipeline(recipe(tmp_path, name, ["crows_pairs", "perplexity"], 2))
        cfg.overlap_evaluation = overlap
        reports[name] = Pipeline(cfg, root=runs, threads=2).run()
    steps = {name: json.loads((runs / name / "pipeline.json").read_text()) for name in reports}
    lanes = steps["lanes"]
    # base and sft were evaluated beside a training stage, one thread each; dpo's evaluation, once the
    # chain was trained, ran beside sft's if that was still going (one thread) and alone otherwise (both);
    # logs of the side lane are kept in the run
    assert [lanes["evals"][s]["beside_training"] for s in ("base", "sft")] == [True, True]
    assert [lanes["evals"][s]["threads"] for s in ("base", "sft")] == [1, 1]
    last = lanes["evals"]["dpo"]
    assert last["threads"] == (1 if last["beside_training"] else 2)
    assert [lanes["stages"][s]["threads"] for s in ("sft", "dpo")] == [1, 1]
    assert (runs / "lanes" / "logs" / "eval-base.log").stat().st_size > 0
    assert not any(step["beside_training"] for step in steps["in-turn"]["evals"].values())
    assert all(step["threads"] == 2 for step in steps["in-turn"]["evals"].values())

    def values(report: dict) -> dict:
        return {
            (r["suite"], r["metric"], s): c["value"] for r in report["rows"] for s, c in r["cells"].items()
        }

    assert reports["lanes"]["stages"] == reports["in-turn"]["stages"] == ["base", "sft", "dpo"]
    assert values(reports["lanes"]).keys() == values(reports["in-turn"]).keys()
    for key, value in values(reports["in-turn"]).items():
        assert values(reports["lanes"])[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_a_failed_evaluation_in_the_side_lane_stops_the_run(tmp_path, monkeypatch):
    from concurrent.futures import wait

    import alignment.pipeline
    from alignment.pipeline import Pipeline

    started = []

    def fake_step(args, what, threads, log=None):
        started.append(what)
        raise SafealignError(f"{what}: the suite broke")

    def fake_train(self, stage, model, upstream):
        started.append(f"train {stage.name}")
        wait(self.lane_jobs[:1], timeout=60)  # the base evaluation fails while the first stage trains
        return model, upstream, {"status": "completed"}

    monkeypatch.setattr(alignment.pipeline, "run_safealign", fake_step)
    monkeypatch.setattr(alignment.pipeline, "available_memory_gb", lambda: 16.0)
    monkeypatch.setattr(Pipeline, "train", fake_train)
    cfg = load_pipeline(recipe(tmp_path, "broken", ["crows_pairs"], 2))
    pipeline = Pipeline(cfg, root=tmp_path / "runs", threads=2)
    pipeline.state = alignment.pipeline.PipelineState(tmp_path)
    pipeline.base_path = "tiny-random"
    with pytest.raises(SafealignError, match="eval base: the suite broke"):
        pipeline.train_and_evaluate("chain")
    assert sorted(started) == ["eval base", "train sft"]  # dpo never started


def test_the_last_stage_is_evaluated_beside_a_busy_lane(tmp_path, monkeypatch):
    import threading

    import alignment.evaluation
    import alignment.pipeline
    from alignment.pipeline import Pipeline

    last_started = threading.Event()
    threads = {}

    def fake_step(args, what, n, log=None):
        threads[what] = n
        if what == "eval dpo":
            last_started.set()
        elif what == "eval base":  # the lane is still busy when the chain is trained
            assert last_started.wait(timeout=60), "dpo's evaluation queued behind the lane"

    def fake_train(self, stage, model, upstream):
        return model, upstream, {"status": "completed"}

    monkeypatch.setattr(alignment.pipeline, "run_safealign", fake_step)
    monkeypatch.setattr(alignment.evaluation, "load_results", lambda out: {"name": out.name})
    monkeypatch.setattr(alignment.pipeline, "available_memory_gb", lambda: 16.0)
    monkeypatch.setattr(Pipeline, "train", fake_train)
    pipeline = Pipeline(load_pipeline(recipe(tmp_path, "tail", ["crows_pairs"], 2)), root=tmp_path, threads=2)
    pipeline.state = alignment.pipeline.PipelineState(tmp_path)
    pipeline.base_path = "tiny-random"
    results, _ = pipeline.train_and_evaluate("chain")
    assert [results[name]["name"] for name in ("base", "sft", "dpo")] == ["base", "sft", "dpo"]
    # dpo's evaluation shared the CPU with base's (one thread each); sft's, started after, took both
    assert threads == {"eval base": 1, "eval dpo": 1, "eval sft": 2}
    assert pipeline.state.get("evals", "dpo")["beside_training"]


def test_evaluations_run_in_turn_without_the_memory_for_both(tmp_path, monkeypatch):
    import alignment.pipeline
    from alignment.pipeline import Pipeline

    pipeline = Pipeline(load_pipeline(recipe(tmp_path, "small", ["crows_pairs"], 2)), threads=2)
    monkeypatch.setattr(alignment.pipeline, "available_memory_gb", lambda: 16.0)
    assert pipeline.lane_threads() == (2, "requested")
    monkeypatch.setattr(alignment.pipeline, "available_memory_gb", lambda: 5.0)
    assert pipeline.lane_threads() is None
    pipeline.cfg.overlap_memory_gb = 4.0
    assert pipeline.lane_threads() == (2, "requested")
    assert Pipeline(pipeline.cfg, threads=1).lane_threads() is None


@pytest.mark.slow
def test_the_default_recipe_passes_every_check(data_dir, tmp_path):
    """The shipped recipe as `make pipeline` reads it: the model, every data build (the PPO-ptx anchor
    included), every stage config with its data keys resolved, and the evaluation plan."""
    from alignment.pipeline import Pipeline

    path = Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m-instruct" / "pipeline.yaml"
    pipeline = Pipeline(load_pipeline(path), root=tmp_path, source=str(path))
    pipeline.check()
    ppo = next(s for s in pipeline.cfg.stages if s.type == "ppo")
    config = pipeline.stage_config(ppo, "smollm2-135m-instruct", "prompts", None)
    assert config.ptx_coef > 0 and config.ptx_dataset == str(pipeline.run_dir / "data" / "anchor")
    assert not any(tmp_path.iterdir())  # nothing was written
