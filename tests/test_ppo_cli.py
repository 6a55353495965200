"""`safealign train ppo|grpo|rloo` with YAML recipes and a reward plugin, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ppo_support import space_share, write_prompts, write_toy_reward

from alignment.errors import SafealignError

RL_COMMON = {
    "model": "tiny-random",
    "max_new_tokens": 8,
    "max_length": 128,
    "eval_split": "none",
    "save_steps": 2,
}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    return str(write_prompts(tmp_path_factory.mktemp("rl-data") / "prompts", conversational=True))


def write_recipe(tmp_path: Path, name: str, values: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_train_ppo_from_a_recipe_with_a_reward_plugin(cli, prompts, tmp_path):
    recipe = write_recipe(
        tmp_path,
        "ppo",
        {
            **RL_COMMON,
            "dataset": prompts,
            "reward": write_toy_reward(tmp_path),
            "max_steps": 2,
            "rollout_batch_size": 8,
            "per_device_train_batch_size": 4,
            "ppo_epochs": 1,
        },
    )
    out = tmp_path / "ppo-run"
    result = cli("train", "ppo", "--config", recipe, "--output_dir", out, "--kl_coef", "0.2")
    assert result.code == 0, result.err[-2000:]
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["config"]["kl_coef"] == 0.2
    assert record["reward"]["callable"] == "space_share"
    assert "reward_end" in result.out and "ppo stage" in result.out
    # the conversational prompts reach the reward as conversations, as TRL passes them
    assert record["dataset"]["conversational"] is True


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reward", "no_such_reward"], "no_such_reward"),
        (["--rollout_batch_size", "6"], "multiple of per_device_train_batch_size"),
        (["--kl_estimator", "k7"], "kl_estimator"),
    ],
)
def test_train_ppo_bad_settings_exit_2_with_one_line(cli, prompts, tmp_path, flags, message):
    recipe = write_recipe(
        tmp_path,
        "bad",
        {
            **RL_COMMON,
            "dataset": prompts,
            "max_steps": 1,
            "rollout_batch_size": 8,
            "per_device_train_batch_size": 4,
        },
    )
    result = cli("train", "ppo", "--config", recipe, "--output_dir", tmp_path / "bad-run", *flags)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_train_ppo_prompt_dataset_without_prompt_column(cli, tmp_path):
    from datasets import Dataset, DatasetDict

    data = tmp_path / "noprompt"
    DatasetDict(train=Dataset.from_list([{"text": "hi"}])).save_to_disk(str(data))
    recipe = write_recipe(
        tmp_path,
        "r",
        {
            **RL_COMMON,
            "dataset": str(data),
            "reward": "non_empty",
            "rollout_batch_size": 8,
            "per_device_train_batch_size": 4,
        },
    )
    result = cli("train", "ppo", "--config", recipe, "--output_dir", tmp_path / "run")
    assert result.code == 2 and "missing column" in result.err and "'prompt'" in result.err


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_trl_online_stages_train_from_a_recipe(cli, prompts, tmp_path, stage):
    recipe = write_recipe(
        tmp_path,
        stage,
        {
            **RL_COMMON,
            "dataset": prompts,
            "reward": write_toy_reward(tmp_path),
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "learning_rate": 1e-4,
            "logging_steps": 1,
        },
    )
    out = tmp_path / f"{stage}-run"
    result = cli("train", stage, "--config", recipe, "--output_dir", out)
    assert result.code == 0, result.err[-2000:]
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["global_step"] == 2
    from alignment.models import load_model

    load_model(str(out / "model"), device="cpu")


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_trl_online_stages_resume(prompts, tmp_path, stage):
    import importlib

    module = importlib.import_module(f"alignment.stages.{stage}")
    config_cls, run = getattr(module, f"{stage.upper()}StageConfig"), getattr(module, f"run_{stage}")
    values = {
        **RL_COMMON,
        "dataset": prompts,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "save_steps": 2,
    }
    calls = {"n": 0}

    def crashes_on_third_call(prompts, completions, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("scorer crashed")
        return space_share(prompts, completions, **kwargs)

    out = tmp_path / stage
    message = rf"{stage} stopped at step 2: the reward 'crashes_on_third_call' \(test_ppo_cli.py\) raised"
    with pytest.raises(SafealignError, match=message):
        run(config_cls(**values), out, reward_fn=crashes_on_third_call)
    stopped = json.loads((out / "stage.json").read_text())
    assert stopped["status"] == "stopped"
    assert stopped["stopped"]["checkpoint"] == str(out / "checkpoints" / "checkpoint-2")
    run(config_cls(**values, resume=True), out, reward_fn=space_share)
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["resumed_from_step"] == 2
    assert record["steps"]["global_step"] == 4


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_trl_online_stage_resumed_from_its_last_checkpoint_trains_no_more(prompts, tmp_path, stage):
    """Killed after the checkpoint at max_steps but before the stage recorded its end: resuming saves
    that checkpoint's model without another step (transformers 5.24 alone trains one more)."""
    import importlib
    import shutil

    module = importlib.import_module(f"alignment.stages.{stage}")
    config_cls, run = getattr(module, f"{stage.upper()}StageConfig"), getattr(module, f"run_{stage}")
    values = {**RL_COMMON, "dataset": prompts, "max_steps": 2, "per_device_train_batch_size": 8}
    out = tmp_path / stage
    run(config_cls(**values), out, reward_fn=space_share)
    record = json.loads((out / "stage.json").read_text())
    (out / "stage.json").write_text(json.dumps({**record, "status": "running"}))
    shutil.rmtree(out / "model")
    calls = []

    def counted(prompts, completions, **kwargs):
        calls.append(len(completions))
        return space_share(prompts, completions, **kwargs)

    run(config_cls(**values, resume=True), out, reward_fn=counted)
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["resumed_from_step"] == 2
    assert record["steps"]["global_step"] == 2 and calls == []  # nothing generated or scored
    assert (out / "model").is_dir()


def test_trl_online_stage_stops_on_a_nan_reward(prompts, tmp_path):
    from alignment.stages.grpo import GRPOStageConfig, run_grpo

    def undefined(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    values = {**RL_COMMON, "dataset": prompts, "max_steps": 2, "per_device_train_batch_size": 8}
    with pytest.raises(SafealignError, match="reward 'undefined' .* returned 8 non-finite or missing scores"):
        run_grpo(GRPOStageConfig(**values, num_generations=4), tmp_path / "grpo", reward_fn=undefined)
    assert json.loads((tmp_path / "grpo" / "stage.json").read_text())["status"] == "stopped"


def test_trl_online_config_validation():
    from alignment.stages.grpo import GRPOStageConfig

    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOStageConfig(per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="at least 2"):
        GRPOStageConfig(per_device_train_batch_size=6, num_generations=1)


@pytest.mark.parametrize(
    "recipe",
    sorted(
        str(p)
        for d in ("smollm2-135m-instruct", "default")
        for s in ("ppo", "grpo", "rloo")
        for p in (Path("recipes") / d).glob(f"{s}*.yaml")
    ),
)
def test_rl_recipes_parse(recipe):
    from alignment.config import parse_config
    from alignment.stages.registry import stage_entry

    stage = Path(recipe).stem.split("-")[0]
    config_cls, _ = stage_entry(stage)
    (config,) = parse_config(config_cls, ["--config", recipe])
    assert config.reward is not None and config.dataset
