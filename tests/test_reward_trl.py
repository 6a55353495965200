"""The same reward callables run inside TRL's GRPOTrainer (tiny-random model, CPU, one step)."""

from __future__ import annotations

import sys

import pytest

USER_REWARDS = '''
CALLS = []


def brevity(prompts, completions, completion_ids, max_tokens=4, **kwargs):
    """1 for completions of at most max_tokens tokens, falling linearly to 0 at twice that."""
    CALLS.append(len(completions))
    return [max(0.0, min(1.0, 2.0 - len(ids) / max_tokens)) for ids in completion_ids]
'''


def test_yaml_composite_with_a_user_plugin_trains_in_grpo(tmp_path, tiny_model, monkeypatch):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from alignment.models import load_model
    from reward.composite import CompositeReward
    from reward.registry import build_reward

    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "reward.yaml"
    spec.write_text(
        "name: safe_and_short\n"
        "components:\n"
        "  - {reward: non_toxic, weight: 1.0, args: {scorer: jigsaw-bilstm}}\n"
        "  - {reward: 'user_rewards:brevity', name: brevity, weight: 0.5, args: {max_tokens: 6}}\n"
        "  - {reward: length_penalty, args: {max_words: 50}}\n"
    )
    reward = build_reward(spec)
    assert isinstance(reward, CompositeReward)

    model, tokenizer = load_model(tiny_model)
    prompts = Dataset.from_dict({"prompt": [f"Tell me about topic {i}." for i in range(4)]})
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        dataloader_pin_memory=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model, args=args, reward_funcs=[reward], train_dataset=prompts, processing_class=tokenizer
    )
    try:
        trainer.train()
    finally:
        calls = list(sys.modules["user_rewards"].CALLS)
        sys.modules.pop("user_rewards", None)
    assert calls and sum(calls) >= 4  # the plugin scored every generated completion
    logs = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert "rewards/safe_and_short/mean" in logs
    assert {"reward/non_toxic", "reward/brevity", "reward/length_penalty"} <= set(logs)  # via log_metric
    assert set(reward.last_components) == {"non_toxic", "brevity", "length_penalty"}
    assert logs["rewards/safe_and_short/mean"] == pytest.approx(logs["reward"], abs=1e-5)
