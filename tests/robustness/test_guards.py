"""Guards that stop a run instead of reporting garbage: rewards that return non-numbers or exit, and
training whose loss or weights stop being finite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from alignment.rl.rollout import RewardFailed, score_completions


def generator_reward(prompts, completions, **kwargs):
    return (1.0 for _ in completions)


def string_reward(prompts, completions, **kwargs):
    return "0.5" * len(completions)


def string_score_reward(prompts, completions, **kwargs):
    return ["0.5" for _ in completions]


def meta_reward(prompts, completions, **kwargs):
    return torch.zeros(len(completions), device="meta")


def exiting_reward(prompts, completions, **kwargs):
    sys.exit(3)


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (generator_reward, "returned generator, expected a list of numbers"),
        (string_reward, "returned str, expected a list of numbers"),
        (string_score_reward, "returned str '0.5' as score 1, expected a number"),
        (meta_reward, "returned a meta tensor"),
        (exiting_reward, "raised SystemExit: 3"),
    ],
)
def test_a_reward_returning_non_numbers_or_exiting_is_named(fn, problem):
    with pytest.raises(RewardFailed, match=problem) as caught:
        score_completions(fn, ["p", "p"], ["a", "b"], [[1], [2]])
    assert f"'{fn.__name__}' (test_guards.py)" in str(caught.value)


def test_tensors_and_arrays_of_scores_are_accepted():
    import numpy as np

    def tensor_reward(prompts, completions, **kwargs):
        return torch.tensor([0.25, 0.5])

    def array_reward(prompts, completions, **kwargs):
        return np.array([1, 2])

    assert score_completions(tensor_reward, ["p", "p"], ["a", "b"], [[1], [2]]) == [0.25, 0.5]
    assert score_completions(array_reward, ["p", "p"], ["a", "b"], [[1], [2]]) == [1.0, 2.0]


# ---- non-finite training ---------------------------------------------------------------------------------

STAGE_DATA = {"sft": "sft", "dpo": "pref", "ppo": "prompts", "grpo": "prompts", "rloo": "prompts"}
GROUPS = "num_generations: 2\nper_device_train_batch_size: 4\n"
RL_EXTRA = {
    "ppo": "rollout_batch_size: 4\nper_device_train_batch_size: 4\n",
    "grpo": GROUPS,
    "rloo": GROUPS,
}
NOISY_REWARD = (  # tiny-random's sampled completions often tie; random scores always give a gradient
    "import random\n\n"
    "def noisy(prompts, completions, **kwargs):\n    return [random.random() for _ in completions]\n"
)


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory) -> dict[str, str]:
    from ppo_support import write_prompts
    from stages_support import write_preference, write_sft

    root = tmp_path_factory.mktemp("guard-data")
    return {
        "sft": str(write_sft(root / "sft", train=8, test=2)),
        "pref": str(write_preference(root / "pref", train=8, test=2)),
        "prompts": str(write_prompts(root / "prompts", train=8, test=2)),
    }


@pytest.mark.parametrize("stage", sorted(STAGE_DATA))
def test_training_that_turns_the_weights_nan_stops_and_keeps_the_last_good_checkpoint(
    cli, tmp_path, stage_data, stage
):
    """learning_rate 1e9 overflows the weights within a step or two: the stage stops with one line, records
    ``stopped``, and its newest checkpoint holds finite weights (never a NaN model marked completed)."""
    import json

    from safetensors.torch import load_file

    recipe = tmp_path / "recipe.yaml"
    rl = ""
    if stage in RL_EXTRA:  # a reward that differs between completions, so every RL stage has a gradient
        (tmp_path / "noisy_reward.py").write_text(NOISY_REWARD, encoding="utf-8")
        rl = f"{RL_EXTRA[stage]}max_new_tokens: 4\nreward: {tmp_path / 'noisy_reward.py'}:noisy\n"
    recipe.write_text(
        f"model: tiny-random\ndataset: {stage_data[STAGE_DATA[stage]]}\nmax_steps: 4\nsave_steps: 1\n"
        f"learning_rate: 1.0e+9\neval_split: none\nmax_length: 64\n{rl}",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = cli("train", stage, "--config", recipe, "--output_dir", out)
    lines = [line for line in result.err.splitlines() if line.startswith("safealign: error:")]
    assert result.code == 2 and "Traceback" not in result.err, result.err[-2000:]
    assert len(lines) == 1 and "not finite" in lines[0], result.err[-2000:]
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "stopped" and not (out / "model").exists()
    kept = record["stopped"]["checkpoint"]
    if kept not in (None, "None"):
        files = list(Path(kept).glob("*.safetensors")) + list(Path(kept).glob("trainable.pt"))
        assert files, kept
        for file in files:
            safe = file.suffix == ".safetensors"
            tensors = load_file(file) if safe else torch.load(file, weights_only=True)
            assert all(torch.isfinite(t).all() for t in tensors.values()), file


def test_a_model_with_a_nan_weight_is_refused_before_training(cli, tmp_path, stage_data, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan-model")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "nan-model")
    result = cli(
        "train", "sft", "--model", tmp_path / "nan-model", "--dataset", stage_data["sft"],
        "--max_steps", "1", "--output_dir", tmp_path / "run",
    )  # fmt: skip
    assert result.code == 2 and "Traceback" not in result.err, result.err[-2000:]
    assert "holds NaN or inf values" in result.err and "nan-model" in result.err
    assert not (tmp_path / "run").exists()
