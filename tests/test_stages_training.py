"""SFT and DPO stages on the tiny random model: they learn, save loadable models, skip, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stages_support import (  # noqa: F401  (one_thread: autouse fixture)
    completion_logprob,
    one_thread,
    write_parity,
    write_preference,
    write_sft,
)

from alignment.errors import SafealignError
from alignment.models import load_model
from alignment.stages.dpo import DPOStageConfig, run_dpo
from alignment.stages.sft import SFTStageConfig, run_sft

FAST = {"logging_steps": 2, "per_device_train_batch_size": 8, "max_length": 64}


def stage_record(model_dir: Path) -> dict:
    return json.loads((model_dir.parent / "stage.json").read_text())


def mean_completion_logprob(model_dir: Path, dataset: Path, split: str = "test") -> float:
    """Average log-likelihood of the completions of a split under a saved model (our own computation)."""
    from datasets import load_from_disk

    model, tokenizer = load_model(str(model_dir), device="cpu")
    rows = load_from_disk(str(dataset))[split]
    total = 0.0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        total += completion_logprob(model, tokenizer, prompt, row["completion"][0]["content"] + "<|im_end|>")
    return total / len(rows)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    return write_sft(tmp_path_factory.mktemp("data") / "sft")


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory) -> Path:
    return write_preference(tmp_path_factory.mktemp("data") / "pref")


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_sft_lowers_loss_and_saves_a_loadable_model(tmp_path, tiny_model, sft_data, adapter):
    cfg = SFTStageConfig(
        model="tiny-random",
        dataset=str(sft_data),
        adapter=adapter,
        max_steps=30,
        learning_rate=1e-2 if adapter == "lora" else 1e-3,
        save_steps=15,
        **FAST,
    )
    model_dir = run_sft(cfg, tmp_path / "sft")
    assert model_dir == tmp_path / "sft" / "model"
    record = stage_record(model_dir)
    assert record["status"] == "completed" and record["stage"] == "sft"
    train = record["curves"]["train"]
    # LoRA leaves the (tied) embeddings of the random model alone, so it learns more slowly than full.
    assert train[-1]["loss"] < (0.9 if adapter == "lora" else 0.8) * train[0]["loss"], train
    evals = record["curves"]["eval"]
    assert evals[0]["step"] == 0 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert record["steps"]["global_step"] == 30
    assert record["wall_time_s"] > 0 and record["peak_memory"]["process_peak_rss_mb"] > 0
    assert record["step_time"]["n"] >= 20 and record["precision"]["name"] == "fp32"

    saved = json.loads((model_dir / "adapter_config.json").read_text()) if adapter == "lora" else None
    assert record["model"]["saved_as"] == ("adapter" if adapter == "lora" else "full")
    if saved is not None:
        assert saved["base_model_name_or_path"] == "tiny-random"
        assert not (model_dir / "model.safetensors").exists()
    # The saved model is the trained one: held-out completions are likelier than under the base model.
    assert (
        mean_completion_logprob(model_dir, sft_data)
        > mean_completion_logprob(Path(tiny_model), sft_data) + 1.0
    )
    from alignment.generation import format_prompt, generate

    model, tokenizer = load_model(str(model_dir), device="cpu")
    (reply,) = generate(
        model, tokenizer, [format_prompt(tokenizer, "Rewrite without bias: hi")], max_new_tokens=4
    )
    assert isinstance(reply, str)


def test_lora_can_be_saved_merged(tmp_path, tiny_model, sft_data):
    cfg = SFTStageConfig(
        model="tiny-random",
        dataset=str(sft_data),
        adapter="lora",
        merge_adapter=True,
        max_steps=10,
        learning_rate=1e-2,
        eval_split="none",
        **FAST,
    )
    model_dir = run_sft(cfg, tmp_path / "sft")
    assert stage_record(model_dir)["model"]["saved_as"] == "merged"
    assert (model_dir / "model.safetensors").is_file() and not (model_dir / "adapter_config.json").exists()
    assert mean_completion_logprob(model_dir, sft_data) > mean_completion_logprob(Path(tiny_model), sft_data)


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_dpo_learns_a_preference_on_held_out_prompts(tmp_path, tiny_model, pref_data, adapter):
    cfg = DPOStageConfig(
        model="tiny-random",
        dataset=str(pref_data),
        adapter=adapter,
        max_steps=20,
        learning_rate=1e-3 if adapter == "lora" else 5e-4,
        save_steps=50,
        **FAST,
    )
    record = stage_record(run_dpo(cfg, tmp_path / "dpo"))
    assert record["loss"]["loss_type"] == ["sigmoid"] and not record["loss"]["reference_free"]
    assert "from disk" in record["loss"]["reference"]
    metrics = record["metrics"]
    assert record["dataset"]["eval_rows"] == 16
    assert metrics["eval_rewards/accuracies"] >= 0.9, metrics
    assert metrics["eval_rewards/margins"] > 0.1
    assert record["curves"]["eval"][0]["eval_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert metrics["eval_loss"] < 0.6


def test_dpo_continues_a_lora_sft_stage_from_its_run_dir(tmp_path, sft_data, pref_data):
    sft_dir = run_sft(
        SFTStageConfig(
            model="tiny-random",
            dataset=str(sft_data),
            adapter="lora",
            max_steps=6,
            learning_rate=3e-3,
            **FAST,
        ),
        tmp_path / "sft",
    ).parent
    model_dir = run_dpo(
        DPOStageConfig(
            model=str(sft_dir),
            dataset=str(pref_data),
            adapter="lora",
            max_steps=15,
            learning_rate=1e-3,
            **FAST,
        ),
        tmp_path / "dpo",
    )
    record = stage_record(model_dir)
    assert record["adapter"]["continues_input_adapter"] is True
    assert record["loss"]["reference"] == "a frozen copy of the input adapter as loaded from disk"
    assert record["input_model"]["path"] == str(sft_dir / "model")
    assert (
        json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "tiny-random"
    )
    assert not (model_dir / "ref").exists()  # TRL's frozen reference copy is not part of the output
    assert record["metrics"]["eval_rewards/accuracies"] > 0.75
    load_model(str(model_dir), device="cpu")


def test_dpo_parity_moves_toward_indifference(tmp_path, tiny_model):
    data = write_parity(tmp_path / "parity")
    model_dir = run_dpo(
        DPOStageConfig(model="tiny-random", dataset=str(data), max_steps=25, learning_rate=1e-3, **FAST),
        tmp_path / "dpo",
    )
    record = stage_record(model_dir)
    assert record["dataset"]["strategy"] == "parity"
    assert record["loss"]["loss_type"] == ["exo_pair"] and record["loss"]["label_smoothing"] == 0.5
    assert record["loss"]["reference_free"] is True

    def mean_gap(path: Path) -> float:
        from datasets import load_from_disk

        model, tokenizer = load_model(str(path), device="cpu")
        rows = [r for r in load_from_disk(str(data))["test"] if r["orientation"] == "a_over_b"]
        gaps = [
            completion_logprob(model, tokenizer, r["prompt"], r["chosen"])
            - completion_logprob(model, tokenizer, r["prompt"], r["rejected"])
            for r in rows
        ]
        return sum(abs(g) for g in gaps) / len(gaps)

    before, after = mean_gap(Path(tiny_model)), mean_gap(model_dir)
    assert after < 0.5 * before, (before, after)


def test_finished_stage_is_skipped_and_force_retrains(tmp_path, sft_data):
    cfg = SFTStageConfig(
        model="tiny-random", dataset=str(sft_data), max_steps=4, learning_rate=1e-3, eval_split="none", **FAST
    )
    model_dir = run_sft(cfg, tmp_path / "sft")
    first = stage_record(model_dir)
    assert first["dataset"]["eval_rows"] == 0 and first["curves"]["eval"] == []
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    run_sft(cfg, tmp_path / "sft")
    assert stage_record(model_dir) == first and (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    cfg.force = True
    run_sft(cfg, tmp_path / "sft")
    assert len(stage_record(model_dir)["segments"]) == 1
    assert (model_dir / "model.safetensors").stat().st_mtime_ns != stamp


def test_two_processes_train_one_run(tmp_path, sft_data):
    """torchrun workers on a CPU form one gloo group: each sees half the batches, one writes the outputs."""
    out = tmp_path / "ddp"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port, so parallel test runs do not collide
        "--nproc_per_node",
        "2",
    ]
    command = [
        *torchrun,
        "-m",
        "alignment",
        "train",
        "sft",
        "--model",
        "tiny-random",
        "--dataset",
        str(sft_data),
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--max_length",
        "64",
        "--output_dir",
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("sft finished") == 1
    record = json.loads((out / "stage.json").read_text())
    # 6 steps x 8 rows x 2 processes = 96 rows = 1.5 epochs of 64 rows (one process would reach 0.75)
    assert record["status"] == "completed" and record["metrics"]["epoch"] == pytest.approx(1.5)
    assert (out / "model" / "model.safetensors").is_file()
    assert not list(out.glob(".model*"))


@pytest.mark.slow  # reads the real SR-LLM rewrite pairs
def test_builder_spec_builds_the_dataset_into_the_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("SAFEALIGN_DATA_DIR", str(data_dir))
    spec = "builder:preference?source=rewrite_pairs"
    settings = {
        "model": "tiny-random",
        "dataset": spec,
        "max_steps": 2,
        "max_train_samples": 16,
        "max_eval_samples": 8,
        "logging_steps": 1,
    }
    with pytest.raises(SafealignError, match="raise max_length"):  # the system prompt alone is > 64 tokens
        run_dpo(DPOStageConfig(**settings, max_length=64), tmp_path / "dpo")
    assert sorted(p.name for p in (tmp_path / "dpo").iterdir()) == ["dataset"]  # only the (complete) build
    record = stage_record(run_dpo(DPOStageConfig(**settings, max_length=512), tmp_path / "dpo"))
    assert record["dataset"]["spec"] == spec and record["dataset"]["strategy"] == "rewrite_over_original"
    assert (tmp_path / "dpo" / "dataset" / "provenance.json").is_file()
    assert record["dataset"]["train_rows"] == 16 and 0 < record["dataset"]["train_rows_used"] <= 16
