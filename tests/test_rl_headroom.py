"""Prompts with headroom, the paired held-out reward, score normalisation, value warm-up and the KL stop
(unit level, and through the PPO and GRPO stages on tiny-random)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ppo_support import write_prompts

from alignment.rl.advantages import ScoreNormalizer
from alignment.rl.headroom import HeadroomConfig, ScoreCache, apply_headroom, lowest_quantile
from alignment.rl.prompts import PromptSet
from alignment.rl.scoring import paired_change
from alignment.stages.ppo import PPOStageConfig, run_ppo

TINY = dict(
    model="tiny-random",
    rollout_batch_size=8,
    per_device_train_batch_size=8,
    max_new_tokens=4,
    max_length=96,
    learning_rate=1e-3,
    value_head_learning_rate=1e-3,
    save_steps=100,
    per_device_eval_batch_size=8,
)


def number_of(prompt) -> int:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return int(text.rstrip(".").split()[-1])


def odd_prompts_score_low(prompts, completions, **kwargs):
    """0 on prompts with an odd number, 1 on even ones, plus a small completion-length term."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(number_of(p) % 2 == 0) + 0.0001 * len(t) for p, t in zip(prompts, texts, strict=True)]


def recording(seen: list[int]):
    """:func:`odd_prompts_score_low` that appends the number of every prompt it scores to ``seen``."""

    def odd_low(prompts, completions, **kwargs):
        seen.extend(number_of(p) for p in prompts)
        return odd_prompts_score_low(prompts, completions)

    return odd_low


def prompt_set(n: int) -> PromptSet:
    return PromptSet([f"p{i}" for i in range(n)], [[i + 1, 7] for i in range(n)], {"id": list(range(n))})


def stage(out: Path) -> dict:
    return json.loads((out / "stage.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    return str(write_prompts(tmp_path_factory.mktemp("headroom-data") / "prompts", train=24, test=8))


# ------------------------------------------------------------------------------------------- units


def test_lowest_quantile_keeps_the_lowest_scores():
    rng = np.random.default_rng(3)
    scores = rng.random(40)
    kept = lowest_quantile(scores.tolist(), 0.25)
    assert len(kept) == 10
    assert set(kept) == set(np.argsort(scores)[:10].tolist())
    assert max(scores[kept]) < min(np.delete(scores, kept))
    assert lowest_quantile([0.5], 0.01) == [0]


def test_selection_caches_scores_and_recomputes_for_another_identity(tmp_path):
    data, calls = prompt_set(12), []
    per_prompt = np.array([5, 3, 9, 1, 7, 2, 8, 0, 6, 4, 11, 10], dtype=float)

    def score(prompts: PromptSet, indices: list[int], seed: int) -> np.ndarray:
        calls.append(list(indices))
        return np.stack([per_prompt[indices], per_prompt[indices] + 1.0], axis=1)

    cfg = HeadroomConfig(headroom_quantile=0.25)
    cache = tmp_path / "scores.json"
    kept, kept_heldout, record = apply_headroom(
        cfg, data, None, score, seed=0, cache_path=cache, identity={"model": "a"}
    )
    assert kept == [3, 5, 7] and kept_heldout is None  # the three lowest of 12
    assert record["train"]["from_cache"] == 0 and record["train"]["base_mean_kept"] == pytest.approx(1.5)
    again = apply_headroom(cfg, data, None, score, seed=0, cache_path=cache, identity={"model": "a"})
    assert again[0] == kept and len(calls) == 1 and again[2]["train"]["from_cache"] == 12
    apply_headroom(cfg, data, None, score, seed=0, cache_path=cache, identity={"model": "b"})
    assert len(calls) == 2, "a cache made for another model must not be reused"
    assert ScoreCache(cache, {"model": "b"}).scores and not ScoreCache(cache, {"model": "a"}).scores


def test_heldout_selection_uses_an_independent_draw(tmp_path):
    seeds = []

    def score(prompts: PromptSet, indices: list[int], seed: int) -> np.ndarray:
        seeds.append(seed)
        return np.arange(len(indices), dtype=float)[:, None]

    cfg = HeadroomConfig(headroom_quantile=0.5, headroom_heldout=True)
    _, kept_heldout, record = apply_headroom(
        cfg, prompt_set(8), prompt_set(4), score, seed=0, cache_path=tmp_path / "c.json", identity={}
    )
    assert kept_heldout == [0, 1] and record["heldout"]["kept"] == 2
    assert len(set(seeds)) == 2, "held-out prompts must be chosen on other samples than the train ones"


def test_paired_change_against_an_independent_computation():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.2, 60)
    trained = base + 0.1 + rng.normal(0, 0.02, 60)
    out = paired_change(base, trained, seed=1)
    diff = trained - base
    assert out["change"] == pytest.approx(diff.mean(), abs=1e-6)
    assert out["base_sd"] == pytest.approx(np.std(base, ddof=1), abs=1e-6)
    assert out["change_in_base_sd"] == pytest.approx(diff.mean() / np.std(base, ddof=1), abs=1e-5)
    assert out["p"] < 0.01 and out["ci95"][0] > 0 and out["n"] == 60
    same = paired_change(base, base.copy())
    assert same["change"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_change(base, trained[:-1])


def test_score_normalizer_batch_and_running_match_numpy():
    a, b = np.array([0.2, 0.9, 0.4, 0.7]), np.array([0.1, 0.3, 1.0])
    batch = ScoreNormalizer("batch")(torch.tensor(b)).numpy()
    assert batch == pytest.approx((b - b.mean()) / b.std(ddof=1), abs=1e-6)
    running = ScoreNormalizer("running")
    running(torch.tensor(a))
    second = running(torch.tensor(b)).numpy()
    both = np.concatenate([a, b])
    assert second == pytest.approx((b - both.mean()) / both.std(ddof=1), abs=1e-6)
    restored = ScoreNormalizer("running", **running.state())
    assert restored.mean == pytest.approx(both.mean()) and restored.count == 7
    assert ScoreNormalizer("none")(torch.tensor(b)).numpy() == pytest.approx(b)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(headroom_quantile=0.0), "headroom_quantile"),
        (dict(headroom_quantile=1.5), "headroom_quantile"),
        (dict(headroom_quantile=0.5, headroom_samples=0), "headroom_samples"),
        (dict(headroom_heldout=True), "headroom_heldout needs"),
        (dict(reward_normalization="sometimes"), "reward_normalization"),
        (dict(value_warmup_steps=-1), "value_warmup_steps"),
        (dict(kl_stop=0.0), "kl_stop"),
        (dict(eval_samples=0), "eval_samples"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        PPOStageConfig(**dict(TINY, **change))


# ------------------------------------------------------------------------------------------ stages


def test_ppo_trains_only_on_prompts_with_headroom_and_reports_the_paired_change(prompts, tmp_path):
    seen: list[int] = []
    reward = recording(seen)
    cfg = PPOStageConfig(
        **dict(TINY, dataset=prompts, max_steps=2, headroom_quantile=0.5, headroom_samples=1, eval_samples=2)
    )
    out = tmp_path / "run"
    run_ppo(cfg, out, reward_fn=reward)
    record = stage(out)
    headroom = record["dataset"]["headroom"]
    assert headroom["train"]["kept"] == 12 and headroom["train"]["scored"] == 24
    assert headroom["train"]["base_mean_kept"] < 0.1 < headroom["train"]["base_mean_all"]
    assert record["dataset"]["train_prompts"] == 12
    # scoring saw all 24 train prompts, the 2 iterations x 8 rollouts only odd ones (test ones are >= 1000)
    train_numbers = [n for n in seen if n < 1000]
    assert sorted(set(train_numbers[:24])) == list(range(24))
    rollout_numbers = train_numbers[24:]
    assert len(rollout_numbers) == 16 and all(n % 2 == 1 for n in rollout_numbers)
    change = record["metrics"]["eval_reward_change"]
    evals = record["curves"]["eval"]
    assert change["n"] == 8 == evals[0]["eval_prompts"]
    assert change["base_mean"] == pytest.approx(evals[0]["eval_reward"], abs=1e-5)
    assert change["trained_mean"] == pytest.approx(evals[-1]["eval_reward"], abs=1e-5)
    assert "eval_kl_per_token" in evals[-1] and evals[0]["eval_kl"] == pytest.approx(0.0, abs=1e-4)
    assert evals[-1]["eval_change_in_base_sd"] == change["change_in_base_sd"]
    assert "eval_change_p" not in evals[0]
    assert (out / "headroom.json").is_file()
    # the same selection again, under another training seed: read from the cache, nothing sampled for it
    seen.clear()
    run_ppo(PPOStageConfig(**dict(cfg.to_dict(), force=True, seed=1)), out, reward_fn=reward)
    assert stage(out)["dataset"]["headroom"]["train"]["from_cache"] == 24
    assert all(n % 2 == 1 for n in seen if n < 1000)


def test_value_warmup_moves_only_the_value_head(prompts, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from alignment.models import resolve_model

    out = tmp_path / "warmup"
    cfg = PPOStageConfig(**dict(TINY, dataset=prompts, max_steps=2, value_warmup_steps=2, eval_split="none"))
    run_ppo(cfg, out, reward_fn=odd_prompts_score_low)
    rows = stage(out)["curves"]["train"]
    assert [r["critic_only"] for r in rows] == [True, True]
    assert all(abs(r["kl"]) < 1e-5 for r in rows)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-random").path).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert all(torch.equal(base[k], trained[k]) for k in base)
    head = load_file(out / "value_head.safetensors")
    assert any(t.abs().sum() > 0 for t in head.values()), "the value head should have learned"
    # without warm-up the same run moves the policy
    moved = tmp_path / "no-warmup"
    run_ppo(
        PPOStageConfig(**dict(cfg.to_dict(), value_warmup_steps=0)), moved, reward_fn=odd_prompts_score_low
    )
    trained = AutoModelForCausalLM.from_pretrained(moved / "model").state_dict()
    assert not all(torch.equal(base[k], trained[k]) for k in base)


def test_kl_stop_ends_the_run_normally_with_the_model_kept(prompts, tmp_path):
    out = tmp_path / "klstop"
    cfg = PPOStageConfig(
        **dict(
            TINY,
            dataset=prompts,
            max_steps=40,
            learning_rate=5e-3,
            kl_coef=0.0,
            kl_stop=0.5,
            eval_split="none",
        )
    )
    run_ppo(cfg, out, reward_fn=odd_prompts_score_low)
    record = stage(out)
    stop = record["metrics"]["early_stop"]
    assert record["status"] == "completed" and 0 < stop["step"] < 40 and stop["kl"] > 0.5
    assert record["steps"]["global_step"] == stop["step"] == len(record["curves"]["train"])
    assert all(row["kl"] <= 0.5 for row in record["curves"]["train"])
    assert (out / "model").is_dir()


def test_batch_normalised_scores_have_zero_mean(prompts, tmp_path):
    out = tmp_path / "norm"
    cfg = PPOStageConfig(
        **dict(TINY, dataset=prompts, max_steps=2, reward_normalization="batch", eval_split="none")
    )
    run_ppo(cfg, out, reward_fn=odd_prompts_score_low)
    rows = stage(out)["curves"]["train"]
    assert all(abs(r["score"]) < 1e-5 and r["reward"] > 0.05 for r in rows)


def test_grpo_selects_prompts_with_headroom_and_scores_heldout_like_ppo(prompts, tmp_path):
    from alignment.stages.grpo import GRPOStageConfig, run_grpo

    seen: list[int] = []
    reward = recording(seen)
    shared = dict(
        model="tiny-random",
        dataset=prompts,
        max_steps=1,
        max_new_tokens=4,
        max_length=96,
        headroom_quantile=0.25,
        headroom_samples=1,
        eval_samples=2,
        per_device_eval_batch_size=8,
        save_steps=100,
    )
    cfg = GRPOStageConfig(**shared, per_device_train_batch_size=4, num_generations=2)
    run_grpo(cfg, tmp_path / "grpo", reward_fn=reward)
    record = stage(tmp_path / "grpo")
    assert record["dataset"]["headroom"]["train"]["kept"] == 6
    assert len(seen) > 24 and all(n % 2 == 1 for n in seen[24:] if n < 1000)
    grpo = record["metrics"]
    change = grpo["eval_reward_change"]
    assert change["n"] == grpo["eval_prompts"] == 8
    assert change["change"] == pytest.approx(grpo["eval_reward_end"] - grpo["eval_reward_start"], abs=1e-5)
    assert grpo["eval_kl_per_token_end"] > 0
    # TRL's own evaluation is off by default: no eval_* of TRL's in the record, no eval curve
    assert "eval_runtime" not in grpo and "eval_reward" not in grpo and record["curves"]["eval"] == []
    # the starting model's held-out samples are PPO's: same seed, prompts and sampler
    run_ppo(PPOStageConfig(**dict(TINY, **shared, rollout_batch_size=8)), tmp_path / "ppo", reward_fn=reward)
    assert stage(tmp_path / "ppo")["metrics"]["eval_reward_start"] == pytest.approx(grpo["eval_reward_start"])


def test_trl_evaluation_is_asked_for_explicitly(prompts):
    from alignment.stages.grpo import GRPOStageConfig
    from alignment.stages.trl_online import shared_settings

    values = dict(model="tiny-random", dataset=prompts, per_device_train_batch_size=4, num_generations=2)
    off = shared_settings(GRPOStageConfig(**values), None)
    assert off["eval_strategy"] == "no" and off["eval_on_start"] is False
    on = shared_settings(GRPOStageConfig(**values, trl_evaluation=True), None)
    assert "eval_strategy" not in on and "eval_on_start" not in on  # the shared driver's schedule stands
    with pytest.raises(ValueError, match="trl_evaluation: true"):
        GRPOStageConfig(**values, eval_steps=2)
