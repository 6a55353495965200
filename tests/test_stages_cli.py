"""``safealign train``: recipes parse, bad settings exit 2 naming file and key, runs and reruns behave."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from stages_support import one_thread, write_preference, write_sft  # noqa: F401  (one_thread: autouse fixture)

from alignment.config import parse_config
from alignment.stages.dpo import DPOStageConfig
from alignment.stages.sft import SFTStageConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGE_RECIPES = sorted(
    p
    for p in RECIPES.glob("*/*.yaml")
    if p.parent.name != "accelerate" and p.name.split("-")[0].split(".")[0] in ("sft", "dpo")
)


def test_every_stage_recipe_parses():
    assert len(STAGE_RECIPES) >= 10
    for recipe in STAGE_RECIPES:
        config_cls = SFTStageConfig if recipe.name.startswith("sft") else DPOStageConfig
        (config,) = parse_config(config_cls, ["--config", str(recipe)])
        assert config.dataset, recipe
        if recipe.parent.name != "default":
            assert config.model == recipe.parent.name, recipe
    families = {p.parent.name for p in STAGE_RECIPES}
    assert {"smollm2-135m-instruct", "qwen2.5-0.5b-instruct", "llama-3.2-1b-instruct"} <= families
    assert (RECIPES / "smollm2-135m-instruct" / "sft-quick.yaml").is_file()


def test_every_rl_recipe_parses():
    from alignment.stages.grpo import GRPOStageConfig
    from alignment.stages.ppo import PPOStageConfig
    from alignment.stages.rloo import RLOOStageConfig

    classes = {"ppo": PPOStageConfig, "grpo": GRPOStageConfig, "rloo": RLOOStageConfig}
    recipes = sorted(p for p in RECIPES.glob("*/*.yaml") if p.name.split("-")[0].split(".")[0] in classes)
    assert len(recipes) >= 9
    for recipe in recipes:
        (config,) = parse_config(classes[recipe.name.split("-")[0].split(".")[0]], ["--config", str(recipe)])
        assert config.dataset and config.reward, recipe


def make_ppo(*variables: str) -> str:
    """The command ``make ppo`` would run (dry run): its prerequisites and the training command."""
    import subprocess

    root = RECIPES.parent
    result = subprocess.run(["make", "-n", "ppo", *variables], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_ppo_runs_the_recipe_for_the_model_with_the_data_it_names():
    # the quick recipe builds its own data (builder specs): no prompt pool, no classifier, no --dataset
    quick = make_ppo()
    assert "recipes/smollm2-135m-instruct/ppo-quick.yaml" in quick
    assert "--dataset" not in quick and "train-stereotype" not in quick and "data build" not in quick
    # the standard recipe reads the shared pool: it is passed (and built first when missing)
    standard = make_ppo("VARIANT=standard")
    assert "recipes/smollm2-135m-instruct/ppo.yaml" in standard and "--dataset runs/data/prompts" in standard
    # a model whose folder has no PPO recipe falls back to the default one
    assert "--config recipes/default/ppo.yaml" in make_ppo("MODEL=qwen2.5-0.5b-instruct")


@pytest.mark.parametrize("name", ["single_gpu", "ddp", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(RECIPES / "accelerate" / f"{name}.yaml"))
    expected = {
        "single_gpu": "NO",
        "ddp": "MULTI_GPU",
        "zero2": "DEEPSPEED",
        "zero3": "DEEPSPEED",
        "fsdp": "FSDP",
    }
    assert str(config.distributed_type).split(".")[-1] == expected[name]
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: tiny-random\nlearning_rat: 1e-3\n", "key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("max_steps: many\n", "key 'max_steps': expected int, got str 'many'"),
        ("adapter: half\n", "key 'adapter': 'half' is not one of"),
        ("trl_args:\n  not_a_field: 1\n", "trl_args key 'not_a_field' is not a field of TRL's DPOConfig"),
        ("loss_type: nope\n", "loss_type 'nope' is not one of"),
    ],
)
def test_bad_recipe_exits_2_naming_file_and_key(tmp_path, cli, text, expected):
    recipe = _recipe(tmp_path, text)
    result = cli("train", "dpo", "--config", recipe)
    assert result.code == 2
    assert str(recipe) in result.err and expected in result.err, result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "runs").exists()


def test_bad_flag_value_exits_2(cli):
    result = cli("train", "sft", "--max_steps", "lots")
    assert result.code == 2 and "max_steps" in result.err


def test_bad_inputs_exit_2_with_one_line(tmp_path, cli, tiny_model):
    sft = write_sft(tmp_path / "sft", train=16, test=4)
    out = str(tmp_path / "run")
    result = cli(
        "train", "sft", "--model", "tiny-random", "--dataset", sft, "--adapter", "qlora", "--output_dir", out
    )
    assert result.code == 2 and "qlora" in result.err and "CUDA" in result.err
    result = cli("train", "dpo", "--model", "tiny-random", "--dataset", sft, "--output_dir", out)
    assert result.code == 2 and "field 'chosen': missing column" in result.err and str(sft) in result.err
    result = cli(
        "train", "sft", "--model", "tiny-random", "--dataset", tmp_path / "nope", "--output_dir", out
    )
    assert result.code == 2 and "no such directory" in result.err
    result = cli("train", "sft", "--model", "no-such-alias", "--dataset", sft, "--output_dir", out)
    assert result.code == 2 and "unknown model alias" in result.err
    assert not (tmp_path / "run" / "model").exists()


def test_train_runs_skips_and_refuses_to_overwrite(tmp_path, cli, tiny_model):
    pref = write_preference(tmp_path / "pref", train=16, test=8)
    out = tmp_path / "runs" / "dpo"
    recipe = _recipe(
        tmp_path,
        f"model: tiny-random\ndataset: {pref}\nmax_steps: 4\nlearning_rate: 1e-3\n"
        "logging_steps: 1\nsave_steps: 2\n",
    )
    result = cli("train", "dpo", "--config", recipe, "--output_dir", out)
    assert result.code == 0, result.err
    assert "dpo stage" in result.out and "eval_rewards/accuracies" in result.out
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["config"]["max_steps"] == 4

    again = cli("train", "dpo", "--config", recipe, "--output_dir", out)
    assert again.code == 0 and "already finished" in again.err
    changed = cli("train", "dpo", "--config", recipe, "--output_dir", out, "--beta", "0.5")
    assert changed.code == 2 and "changed: beta" in changed.err and "--force" in changed.err
    forced = cli("train", "dpo", "--config", recipe, "--output_dir", out, "--beta", "0.5", "--force")
    assert forced.code == 0
    assert json.loads((out / "stage.json").read_text())["config"]["beta"] == 0.5


def test_unfinished_run_needs_resume(tmp_path, cli):
    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (out / "stage.json").write_text(json.dumps({"stage": "sft", "status": "running"}))
    sft = write_sft(tmp_path / "sft", train=8, test=4)
    result = cli("train", "sft", "--model", "tiny-random", "--dataset", sft, "--output_dir", out)
    assert result.code == 2 and "--resume" in result.err and "step 2" in result.err


def test_resumed_at_max_steps_trains_no_more_and_records_no_segment_loss(tmp_path, cli, tiny_model):
    """Killed after the checkpoint at max_steps but before the stage ended: --resume trains no step, and
    the record keeps no segment loss (transformers reports 0.0 for a segment without steps)."""
    sft = write_sft(tmp_path / "sft", train=8, test=2)
    out = tmp_path / "run"
    args = ("train", "sft", "--model", "tiny-random", "--dataset", sft, "--output_dir", out)
    steps = ("--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2")
    assert cli(*args, *steps).code == 0
    first = json.loads((out / "stage.json").read_text())
    assert first["metrics"]["train_loss_segment"] > 0
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    (out / "stage.json").write_text(json.dumps({**first, "status": "running"}))
    shutil.rmtree(out / "model")

    result = cli(*args, *steps, "--resume")
    assert result.code == 0, result.err
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["global_step"] == 2
    assert record["steps"]["resumed_from_step"] == 2
    assert "train_loss_segment" not in record["metrics"]
