"""The PPO stage end to end on tiny-random: learning, KL control, LoRA, seeds, resume and guards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ppo_support import space_share, write_prompts
from stages_support import save_splits

from alignment.errors import SafealignError
from alignment.stages.ppo import PPOStageConfig, run_ppo

# The toy task: 32 prompts per iteration, 8-token completions; reward = spaces per token.
TOY = dict(
    model="tiny-random",
    rollout_batch_size=32,
    per_device_train_batch_size=8,
    max_new_tokens=8,
    max_length=128,
    learning_rate=1e-3,
    value_head_learning_rate=1e-3,
    kl_coef=0.05,
    save_steps=100,
    eval_split="none",
)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    return str(write_prompts(tmp_path_factory.mktemp("ppo-data") / "prompts"))


@pytest.fixture(scope="module")
def anchor_data(tmp_path_factory) -> str:
    """Neutral PPO-ptx prompts, none of them among the toy task's."""

    def neutral(i: int) -> dict:
        return {"prompt": f"The weather in town {i} was", "source": "toy"}

    return str(save_splits(tmp_path_factory.mktemp("anchor") / "anchor", neutral, 24, 4))


def stage(out: Path) -> dict:
    return json.loads((out / "stage.json").read_text(encoding="utf-8"))


def curve(out: Path, key: str) -> list[float]:
    return [row[key] for row in stage(out)["curves"]["train"]]


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "step_time_s"} for row in rows]


@pytest.fixture(scope="module")
def toy_runs(prompts, tmp_path_factory) -> dict[str, Path]:
    """The same 30-iteration toy run with a small and with a large KL coefficient."""
    root = tmp_path_factory.mktemp("ppo-toy")
    runs = {}
    for name, beta in (("small_kl", 0.05), ("large_kl", 1.0)):
        run_ppo(
            PPOStageConfig(**dict(TOY, dataset=prompts, max_steps=30, kl_coef=beta)),
            root / name,
            reward_fn=space_share,
        )
        runs[name] = root / name
    return runs


@pytest.mark.slow
def test_toy_reward_rises_within_a_few_dozen_steps(toy_runs):
    record = stage(toy_runs["small_kl"])
    assert record["status"] == "completed" and record["steps"]["global_step"] == 30
    rewards = curve(toy_runs["small_kl"], "reward")
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert end > start + 0.08, f"reward did not rise: {start:.3f} -> {end:.3f}"
    assert record["metrics"]["reward_start"] == pytest.approx(start, abs=1e-5)
    row = record["curves"]["train"][-1]
    for key in (
        "kl",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "value_loss",
        "policy_loss",
        "explained_variance",
        "response_length",
        "kl_coef",
        "learning_rate",
        "grad_norm",
    ):
        assert isinstance(row[key], (int, float)), key
    assert 0 < row["entropy"] <= math.log(512) + 1e-3  # tiny-random has 512 tokens
    assert (
        record["model"]["saved_as"] == "full" and (toy_runs["small_kl"] / "value_head.safetensors").is_file()
    )
    assert record["peak_memory"]["process_peak_rss_mb"] > 0 and record["wall_time_s"] > 0


@pytest.mark.slow
def test_large_kl_coefficient_keeps_policy_near_reference(toy_runs):
    small, large = curve(toy_runs["small_kl"], "kl"), curve(toy_runs["large_kl"], "kl")
    small_end, large_end = sum(small[-10:]) / 10, sum(large[-10:]) / 10
    assert small_end > 0.5, "the weakly penalised policy should drift from the reference"
    assert large_end < small_end / 3, f"large beta KL {large_end:.3f} vs small beta KL {small_end:.3f}"
    assert large_end < 0.5


def anchor_nll(model_dir: str, prompts: list[str], seed: int = 0) -> float:
    """Mean token NLL, under ``model_dir``'s model, of tiny-random's own sampled continuations of
    ``prompts`` as chat user turns, as the stage renders them (plain transformers calls, not the stage's
    code)."""
    from alignment.models import load_model

    reference, tokenizer = load_model("tiny-random", device="cpu")
    model, _ = load_model(model_dir, device="cpu")
    torch.manual_seed(seed)
    total, count = 0.0, 0
    for text in prompts:
        chat = [{"role": "user", "content": text}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        with torch.no_grad():
            full = reference.generate(ids, do_sample=True, top_k=0, max_new_tokens=8, pad_token_id=0)
            logits = model(full).logits[0, ids.shape[1] - 1 : -1]
        targets = full[0, ids.shape[1] :]
        total -= torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).sum().item()
        count += len(targets)
    return total / count


@pytest.mark.slow
def test_ptx_anchor_keeps_language_modelling_on_the_anchor_prompts(prompts, anchor_data, toy_runs, tmp_path):
    out = tmp_path / "ptx"
    cfg = dict(TOY, dataset=prompts, max_steps=30, ptx_coef=1.0, ptx_dataset=anchor_data)
    run_ppo(PPOStageConfig(**cfg), out, reward_fn=space_share)
    record = stage(out)
    assert record["ptx"] == {"prompts": 24, "dropped_too_long": 0}
    losses = curve(out, "ptx_loss")
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert "ptx_loss" not in stage(toy_runs["small_kl"])["curves"]["train"][-1]
    texts = [f"The weather in town {100 + i} was" for i in range(12)]  # not among the anchor prompts
    free = anchor_nll(str(toy_runs["small_kl"] / "model"), texts)
    anchored = anchor_nll(str(out / "model"), texts)
    start = anchor_nll("tiny-random", texts)
    # the same toy run without the anchor drifts on ordinary continuations; the anchored one stays close
    assert anchored < free - 0.1, f"anchored NLL {anchored:.3f} vs free {free:.3f} (reference {start:.3f})"
    rewards = curve(out, "reward")
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.03, "the anchored run still learns the reward"


@pytest.mark.slow
def test_saved_policy_reloads_and_generates(toy_runs):
    from alignment.generation import generate
    from alignment.models import load_model

    model, tokenizer = load_model(str(toy_runs["small_kl"] / "model"), device="cpu")
    (reply,) = generate(model, tokenizer, ["Hello!"], max_new_tokens=4)
    assert isinstance(reply, str)


@pytest.mark.slow
def test_lora_learns_with_the_base_as_reference(prompts, tmp_path):
    out = tmp_path / "lora"
    # tiny-random's frozen tied embeddings are small, so adapting the LM head too is what lets logits move
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    cfg = PPOStageConfig(
        **dict(
            TOY,
            dataset=prompts,
            max_steps=25,
            adapter="lora",
            lora_r=8,
            lora_alpha=16,
            lora_target_modules=targets,
            learning_rate=3e-3,
            eval_split="test",
        )
    )
    run_ppo(cfg, out, reward_fn=space_share)
    record = stage(out)
    rewards = curve(out, "reward")
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.05
    # before training the adapter is a no-op (LoRA B = 0), so the policy equals the reference exactly
    assert record["curves"]["eval"][0]["eval_kl"] == 0.0
    assert record["curves"]["eval"][-1]["eval_kl"] > 0
    assert record["model"]["saved_as"] == "adapter"
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny-random"
    from alignment.models import load_model

    model, _ = load_model(str(out / "model"), device="cpu")
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_same_seed_same_run_other_seed_other_run(prompts, tmp_path):
    def run(name: str, seed: int) -> list[dict]:
        run_ppo(
            PPOStageConfig(**dict(TOY, dataset=prompts, max_steps=3, seed=seed)),
            tmp_path / name,
            reward_fn=space_share,
        )
        return comparable(stage(tmp_path / name)["curves"]["train"])

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert first == again
    assert first != other


def test_resume_after_a_crash_continues_exactly(prompts, anchor_data, tmp_path):
    # with PPO-ptx, whose anchor continuations are sampled two iterations at a time (32 per iteration: 16
    # optimiser steps x 2; a batch of 64): the crash at step 3 falls inside the block of steps 2-3, which
    # the resumed run samples again
    ptx = dict(ptx_coef=1.0, ptx_dataset=anchor_data, ptx_batch_size=2, per_device_eval_batch_size=64)
    cfg = dict(TOY, dataset=prompts, max_steps=4, save_steps=2, **ptx)
    run_ppo(PPOStageConfig(**cfg), tmp_path / "straight", reward_fn=space_share)

    calls = {"n": 0}

    def crashes_on_fourth_call(prompts, completions, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("reward server went away")
        return space_share(prompts, completions, **kwargs)

    out = tmp_path / "crashed"
    with pytest.raises(
        SafealignError,
        match=r"PPO stopped at step 3: the reward 'crashes_on_fourth_call' \(test_ppo_stage.py\) raised "
        r"RuntimeError: reward server went away at test_ppo_stage.py:\d+; checkpoint kept at .*checkpoint-3",
    ):
        run_ppo(PPOStageConfig(**cfg), out, reward_fn=crashes_on_fourth_call)
    assert stage(out)["status"] == "stopped"
    assert (out / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    with pytest.raises(SafealignError, match="--resume"):
        run_ppo(PPOStageConfig(**cfg), out, reward_fn=space_share)
    run_ppo(PPOStageConfig(**dict(cfg, resume=True)), out, reward_fn=space_share)
    record = stage(out)
    assert record["status"] == "completed" and record["steps"]["resumed_from_step"] == 3
    assert comparable(record["curves"]["train"]) == comparable(
        stage(tmp_path / "straight")["curves"]["train"]
    )
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "checkpoint-4" / "trainable.pt")
    resumed = torch.load(out / "checkpoints" / "checkpoint-4" / "trainable.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # a finished stage is skipped, not redone
    run_ppo(PPOStageConfig(**dict(cfg, resume=True)), out, reward_fn=crashes_on_fourth_call)


def test_nan_reward_stops_with_a_kept_checkpoint(prompts, tmp_path):
    calls = {"n": 0}

    def nan_on_third_call(prompts, completions, **kwargs):
        calls["n"] += 1
        scores = space_share(prompts, completions, **kwargs)
        return [math.nan] + scores[1:] if calls["n"] == 3 else scores

    out = tmp_path / "nan"
    with pytest.raises(
        SafealignError, match=r"PPO stopped at step 2: the reward function returned NaN.*1 of 32"
    ):
        run_ppo(PPOStageConfig(**dict(TOY, dataset=prompts, max_steps=5)), out, reward_fn=nan_on_third_call)
    record = stage(out)
    assert record["status"] == "stopped" and record["stopped"]["step"] == 2
    kept = out / "checkpoints" / "checkpoint-2"
    assert record["stopped"]["checkpoint"] == str(kept) and (kept / "trainer_state.json").is_file()
    weights = torch.load(kept / "trainable.pt")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_kl_ceiling_stops_the_run(prompts, tmp_path):
    out = tmp_path / "ceiling"
    with pytest.raises(
        SafealignError, match=r"stopped at step 1: the KL to the reference .* exceeds kl_ceiling"
    ):
        run_ppo(
            PPOStageConfig(**dict(TOY, dataset=prompts, max_steps=5, kl_ceiling=1e-6, learning_rate=1e-2)),
            out,
            reward_fn=space_share,
        )
    assert (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert stage(out)["status"] == "stopped"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rollout_batch_size": 12}, "multiple of per_device_train_batch_size"),
        ({"kl_estimator": "k9"}, "kl_estimator"),
        ({"max_new_tokens": 200}, "below max_length"),
        ({"trl_args": {"beta": 0.1}}, "trl_args does not apply"),
        ({"ptx_coef": 0.5}, "needs ptx_dataset"),
        ({"ptx_coef": -1.0, "ptx_dataset": "x"}, "ptx_coef must be >= 0"),
        ({"ptx_batch_size": 0}, "ptx_batch_size must be at least 1"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        PPOStageConfig(**dict(TOY, **change))


def test_missing_reward_is_a_clear_error(prompts, tmp_path):
    with pytest.raises(SafealignError, match="no reward given"):
        run_ppo(PPOStageConfig(**dict(TOY, dataset=prompts, max_steps=1)), tmp_path / "none")
