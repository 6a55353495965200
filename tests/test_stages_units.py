"""Stage building blocks without training: configs, precision, run-directory rules, dataset checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stages_support import write_preference, write_sft

from alignment.errors import SafealignError
from alignment.stages.common import (
    StageConfig,
    choose_precision,
    lora_config,
    model_slug,
    resolve_input_model,
)
from alignment.stages.data import check_columns, load_stage_data, parse_builder_spec
from alignment.stages.dpo import DPOStageConfig, resolve_loss
from alignment.stages.rundir import StageDir, last_complete_checkpoint
from alignment.stages.runner import config_hash, curves
from alignment.stages.sft import SFTStageConfig


def test_precision_follows_the_hardware_and_refuses_what_it_cannot_do():
    cpu = choose_precision("auto", "lora", device="cpu")
    assert (cpu.name, cpu.load_dtype, cpu.bf16, cpu.fp16) == ("fp32", "float32", False, False)
    with pytest.raises(SafealignError, match="qlora.*CUDA"):
        choose_precision("auto", "qlora", device="cpu")
    with pytest.raises(SafealignError, match="fp16.*CUDA"):
        choose_precision("fp16", "full", device="cpu")
    assert choose_precision("bf16", "full", device="cpu").load_dtype == "float32"  # autocast, fp32 weights


def test_lora_config_targets():
    assert lora_config(StageConfig()) is None
    assert lora_config(StageConfig(adapter="lora")).target_modules == "all-linear"
    config = lora_config(StageConfig(adapter="lora", lora_r=4, lora_target_modules=["q_proj", "v_proj"]))
    assert config.r == 4 and set(config.target_modules) == {"q_proj", "v_proj"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"trl_args": {"no_such_field": 1}}, "not a field of TRL's SFTConfig"),
        ({"trl_args": {"learning_rate": 1.0}}, "set 'learning_rate' directly"),
        ({"trl_args": "{not json"}, "not a JSON object"),
    ],
)
def test_sft_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SFTStageConfig(**kwargs)


def test_sft_config_accepts_known_trl_args_and_none_eval_split():
    config = SFTStageConfig(trl_args='{"max_grad_norm": 0.5}', eval_split="none")
    assert config.trl_args == {"max_grad_norm": 0.5} and config.eval_split is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "nope"}, "loss_type 'nope'"),
        ({"loss_type": "parity,sigmoid"}, "cannot be combined"),
        ({"beta": 0}, "beta"),
        ({"label_smoothing": 0.7}, "label_smoothing"),
    ],
)
def test_dpo_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPOStageConfig(**kwargs)


def test_loss_resolution():
    assert resolve_loss(DPOStageConfig(), "parity").reference_free
    assert resolve_loss(DPOStageConfig(), None).loss_type == ("sigmoid",)
    explicit = resolve_loss(DPOStageConfig(loss_type="sigmoid"), "parity")
    assert explicit.loss_type == ("sigmoid",) and not explicit.reference_free
    combined = resolve_loss(DPOStageConfig(loss_type="sigmoid,sft"), None)
    assert combined.loss_type == ("sigmoid", "sft")


def test_config_hash_ignores_runtime_settings_only():
    base = SFTStageConfig(model="tiny-random", dataset="d")
    assert config_hash(base) == config_hash(
        SFTStageConfig(
            model="tiny-random", dataset="d", resume=True, force=True, logging_steps=1, output_dir="x"
        )
    )
    assert config_hash(base) != config_hash(
        SFTStageConfig(model="tiny-random", dataset="d", learning_rate=1e-4)
    )


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_run_dir_rules(tmp_path):
    sd = StageDir(tmp_path / "run")
    hashed = {"learning_rate": 1e-3}
    assert sd.decide("sft", "h1", hashed, resume=False, force=False).action == "start"

    # an interrupted run: resuming needs the flag, and picks the newest *complete* checkpoint
    sd.root.mkdir()
    sd.write({"stage": "sft", "status": "running", "config_hash": "h1", "config_hashed": hashed})
    _checkpoint(sd.checkpoints, 10)
    _checkpoint(sd.checkpoints, 20)
    half_written = _checkpoint(sd.checkpoints, 30, complete=False)
    assert last_complete_checkpoint(sd.checkpoints).name == "checkpoint-20"
    with pytest.raises(SafealignError, match="--resume"):
        sd.decide("sft", "h1", hashed, resume=False, force=False)
    with pytest.raises(SafealignError, match="changed: learning_rate"):
        sd.decide("sft", "h2", {"learning_rate": 1e-4}, resume=True, force=False)
    decision = sd.decide("sft", "h1", hashed, resume=True, force=False)
    assert decision.action == "resume" and decision.checkpoint.name == "checkpoint-20"
    assert not half_written.exists()

    # a finished run is skipped with the same config, refused with another, redone with --force
    sd.write({"stage": "sft", "status": "completed", "config_hash": "h1", "config_hashed": hashed})
    sd.model.mkdir()
    assert sd.decide("sft", "h1", hashed, resume=False, force=False).action == "skip"
    with pytest.raises(SafealignError, match="different config.*--force"):
        sd.decide("sft", "h2", {"learning_rate": 1e-4}, resume=False, force=False)
    with pytest.raises(SafealignError, match="holds a 'sft' stage"):
        sd.decide("dpo", "h1", hashed, resume=False, force=False)
    forced = sd.decide("sft", "h2", {}, resume=False, force=True, defer_clear=True)
    assert (
        forced.action == "start" and forced.clear and sd.model.exists()
    )  # cleared only once input checks out
    sd.clear()
    assert not sd.model.exists() and not sd.checkpoints.exists() and not sd.stage_file.exists()


def test_stage_dir_stands_for_its_model(tmp_path, tiny_model):
    import shutil

    run = tmp_path / "sft-run"
    shutil.copytree(tiny_model, run / "model")
    (run / "stage.json").write_text(json.dumps({"stage": "sft", "status": "completed"}))
    assert resolve_input_model(str(run)).path == str(run / "model")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "stage.json").write_text("{}")
    with pytest.raises(SafealignError, match="without a finished model"):
        resolve_input_model(str(unfinished))
    assert model_slug(str(run / "model")) == "sft-run"


def test_dataset_loading_and_subsets(tmp_path):
    path = write_sft(tmp_path / "sft", train=40, test=10)
    data = load_stage_data(str(path), "sft", max_train_samples=12, seed=3)
    assert data.info["train_rows"] == 12 and data.info["eval_rows"] == 10
    assert data.info["format"] == "prompt+completion" and data.info["conversational"] is True
    again = load_stage_data(str(path), "sft", max_train_samples=12, seed=3)
    assert again.train["prompt"] == data.train["prompt"]  # the subset is seeded
    no_eval = load_stage_data(str(path), "sft", eval_split="validation")
    assert no_eval.eval is None and "validation" in no_eval.info["eval_note"]
    pref = load_stage_data(str(write_preference(tmp_path / "pref")), "preference")
    assert pref.info["strategy"] == "less_over_more"


def test_dataset_errors_name_the_file_and_field(tmp_path):
    from datasets import Dataset

    with pytest.raises(SafealignError, match="no dataset given"):
        load_stage_data("", "sft")
    with pytest.raises(SafealignError, match="no such directory"):
        load_stage_data(str(tmp_path / "missing"), "sft")
    sft = write_sft(tmp_path / "sft")
    with pytest.raises(SafealignError, match=r"sft/train, field 'chosen': missing column"):
        load_stage_data(str(sft), "preference")
    with pytest.raises(SafealignError, match="no split 'training'"):
        load_stage_data(str(sft), "sft", train_split="training")
    bad = Dataset.from_list([{"prompt": 3, "completion": "x"}])
    with pytest.raises(SafealignError, match=r"row 0, field 'prompt': expected a string or a list"):
        check_columns(bad, "sft", tmp_path / "d", "train")
    empty = Dataset.from_dict({"prompt": [], "completion": []})
    with pytest.raises(SafealignError, match="the split is empty"):
        check_columns(empty, "sft", tmp_path / "d", "train")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("no dataset")
    with pytest.raises(SafealignError, match="not a saved dataset"):
        load_stage_data(str(junk), "sft")


def test_builder_specs():
    assert parse_builder_spec("builder:sft") == ("sft", {})
    assert parse_builder_spec("builder:preference?source=crows_pairs&limit=200") == (
        "preference",
        {"source": "crows_pairs", "limit": "200"},
    )
    with pytest.raises(SafealignError, match="name a builder"):
        parse_builder_spec("builder:?source=x")
    with pytest.raises(SafealignError, match="key=value"):
        parse_builder_spec("builder:sft?source")


def test_curves_keep_train_and_eval_points():
    history = [
        {"loss": 2.0, "grad_norm": 1.0, "logits/chosen": 0.1, "step": 5, "epoch": 0.5},
        {"eval_loss": 1.5, "eval_rewards/accuracies": 0.75, "eval_runtime": 3.0, "step": 5},
        {"train_runtime": 10.0, "train_loss": 1.9, "step": 10},
    ]
    result = curves(history)
    assert result["train"] == [{"step": 5, "epoch": 0.5, "loss": 2.0, "grad_norm": 1.0}]
    assert result["eval"] == [{"step": 5, "eval_loss": 1.5, "eval_rewards/accuracies": 0.75}]
