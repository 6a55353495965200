"""The PPO stage's settings: the shared stage keys plus rollout, reward, KL and update knobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from alignment.rl.headroom import HeadroomConfig
from alignment.rl.kl import KL_ESTIMATORS
from alignment.rl.update import PPOHyperparameters
from alignment.stages.common import StageConfig


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PPOStageConfig(HeadroomConfig, StageConfig):
    """The PPO stage: the shared stage settings plus rollout, reward, KL and PPO-update knobs.

    Shared settings keep their meaning: ``per_device_train_batch_size`` rollouts per forward/backward
    pass, times ``gradient_accumulation_steps`` per optimiser step (one PPO minibatch);
    ``max_steps`` counts PPO iterations (rollout + update); ``max_length`` caps prompt plus completion.
    The ``headroom_*`` keys (:class:`~alignment.rl.headroom.HeadroomConfig`) pick prompts with headroom.
    """

    reward: dict[str, Any] | str | None = field(
        default=None,
        metadata=_help(
            "reward spec for reward.registry.build_reward: a name (`safealign reward list`), "
            "'module:function', 'file.py:function', a YAML file, or a mapping with components"
        ),
    )
    rollout_batch_size: int = field(
        default=16, metadata=_help("prompts sampled per PPO iteration per device")
    )
    ppo_epochs: int = field(default=4, metadata=_help("passes over each batch of rollouts"))
    max_new_tokens: int = field(default=64, metadata=_help("longest completion sampled"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature (log-probs use the same)"))
    kl_coef: float = field(
        default=0.05, metadata=_help("KL penalty coefficient beta (initial value if adaptive)")
    )
    kl_estimator: Literal["k1", "k2", "k3"] = field(
        default="k1", metadata=_help("per-token KL estimator in the penalty: k1 (log ratio), k2, k3")
    )
    kl_target: float | None = field(
        default=None, metadata=_help("adapt beta towards this KL per completion (nats); unset: fixed beta")
    )
    kl_horizon: float = field(default=10000.0, metadata=_help("adaptive KL horizon (rollouts)"))
    kl_ceiling: float | None = field(
        default=50.0, metadata=_help("stop when the mean KL per completion exceeds this (nats); unset: never")
    )
    kl_stop: float | None = field(
        default=None,
        metadata=_help(
            "end training normally (model kept, status completed) when the mean KL per completion of a "
            "rollout batch exceeds this (nats), before updating on it; unset: never"
        ),
    )
    gamma: float = field(default=1.0, metadata=_help("discount factor in GAE"))
    lam: float = field(default=0.95, metadata=_help("GAE lambda"))
    clip_range: float = field(default=0.2, metadata=_help("PPO policy ratio clip epsilon"))
    clip_range_value: float = field(
        default=0.2, metadata=_help("value prediction clip around the old values")
    )
    vf_coef: float = field(default=0.1, metadata=_help("weight of the value loss"))
    whiten_rewards: bool = field(
        default=False, metadata=_help("scale token rewards to unit variance before GAE")
    )
    reward_normalization: Literal["none", "batch", "running"] = field(
        default="none",
        metadata=_help(
            "standardise the scores before the KL penalty: none; batch (mean and sd of this iteration's "
            "scores); running (mean and sd of every score so far)"
        ),
    )
    value_warmup_steps: int = field(
        default=0,
        metadata=_help(
            "the first N iterations train only the value head (no policy update), so the critic "
            "tracks the returns before its advantages move the policy; they count in max_steps"
        ),
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    ptx_coef: float = field(
        default=0.0,
        metadata=_help(
            "PPO-ptx: add this times the policy's mean token NLL on the reference model's fresh "
            "continuations of ptx_dataset's prompts to every optimiser step, which keeps ordinary language "
            "modelling where the reference had it (docs/ppo.md); 0: off"
        ),
    )
    ptx_dataset: str | None = field(
        default=None,
        metadata=_help(
            "built prompt dataset (or builder spec) whose train prompts anchor the policy when ptx_coef > 0; "
            "neutral text, never an evaluation's items"
        ),
    )
    ptx_samples: int = field(
        default=256, metadata=_help("anchor prompts drawn (seeded) from ptx_dataset's train split")
    )
    ptx_batch_size: int = field(
        default=16, metadata=_help("anchor continuations per optimiser step, sampled afresh for each step")
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata=_help("subtract this from the reward of completions that never end")
    )
    system_prompt: str | None = field(default=None, metadata=_help("system message added to every prompt"))
    chat_template: bool | None = field(
        default=None,
        metadata=_help("render prompts with the chat template (default: when the tokenizer has one)"),
    )
    learning_rate: float = field(default=1e-5, metadata=_help("peak learning rate of the policy"))
    value_head_learning_rate: float = field(
        default=1e-4,
        metadata=_help(
            "peak learning rate of the value head (a zero-initialised linear layer: it needs far "
            "larger steps than the policy to track the returns)"
        ),
    )
    lr_scheduler_type: str = field(
        default="constant", metadata=_help("learning-rate schedule (transformers name)")
    )
    lora_dropout: float = field(
        default=0.0, metadata=_help("dropout on the LoRA branch (PPO turns all dropout off; keep 0)")
    )
    max_eval_samples: int | None = field(
        default=64, metadata=_help("held-out prompts scored before and after training (and every eval_steps)")
    )
    save_steps: int = field(default=10, metadata=_help("write a checkpoint every N PPO iterations"))
    logging_steps: int = field(default=1, metadata=_help("log statistics every N PPO iterations"))

    def __post_init__(self) -> None:
        if self.trl_args:
            raise ValueError("trl_args does not apply to PPO, which is safealign's own trainer")
        super().__post_init__()
        self.check_headroom()
        for name in ("rollout_batch_size", "ppo_epochs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        minibatch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.rollout_batch_size % minibatch:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                f"per_device_train_batch_size x gradient_accumulation_steps ({minibatch})"
            )
        if self.max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_length ({self.max_length})"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (PPO samples), got {self.temperature}")
        for name in ("kl_coef", "vf_coef", "max_grad_norm", "clip_range", "clip_range_value"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}"
            )
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if self.reward_normalization not in ("none", "batch", "running"):
            raise ValueError(
                f"reward_normalization must be none, batch or running, got {self.reward_normalization!r}"
            )
        if self.value_warmup_steps < 0:
            raise ValueError(f"value_warmup_steps must be >= 0, got {self.value_warmup_steps}")
        for name in ("kl_target", "kl_ceiling", "kl_stop"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 or unset, got {getattr(self, name)}")
        if self.value_head_learning_rate <= 0:
            raise ValueError(f"value_head_learning_rate must be > 0, got {self.value_head_learning_rate}")
        if self.kl_horizon <= 0:
            raise ValueError(f"kl_horizon must be > 0, got {self.kl_horizon}")
        if self.ptx_coef < 0:
            raise ValueError(f"ptx_coef must be >= 0, got {self.ptx_coef}")
        if self.ptx_coef > 0 and not self.ptx_dataset:
            raise ValueError(
                "ptx_coef > 0 needs ptx_dataset: the prompts whose continuations anchor the policy"
            )
        for name in ("ptx_samples", "ptx_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.reward not in (None, ""):  # names and keys now, so a typo fails before any output
            from alignment.errors import SafealignError
            from reward.registry import check_reward_spec

            try:
                check_reward_spec(self.reward, "key 'reward'")
            except SafealignError as exc:
                raise ValueError(str(exc)) from exc

    def hyperparameters(self) -> PPOHyperparameters:
        return PPOHyperparameters(
            gamma=self.gamma,
            lam=self.lam,
            clip_range=self.clip_range,
            clip_range_value=self.clip_range_value,
            vf_coef=self.vf_coef,
            ppo_epochs=self.ppo_epochs,
            mini_batch_size=self.per_device_train_batch_size * self.gradient_accumulation_steps,
            micro_batch_size=self.per_device_train_batch_size,
            max_grad_norm=self.max_grad_norm,
            temperature=self.temperature,
            whiten_rewards=self.whiten_rewards,
            kl_estimator=self.kl_estimator,
        )
