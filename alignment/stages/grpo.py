"""GRPO with TRL's ``GRPOTrainer`` and safealign's reward callables: ``run_grpo(config, out_dir)``.

Group-relative advantages: each prompt gets ``num_generations`` completions whose rewards are
normalised within the group; no value model. See :mod:`alignment.stages.trl_online` for what GRPO and
RLOO share with the PPO stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from alignment.rl.rollout import RewardFn
from alignment.stages.data import StageData
from alignment.stages.trl_online import (
    LENGTH_CAP_HELP,
    OnlineRLConfig,
    run_online,
    shared_settings,
)


@dataclass
class GRPOTRLConfig(GRPOConfig):
    """TRL's GRPOConfig plus the shared ``max_length`` setting, which TRL's online configs lack."""

    max_length: int | None = field(default=None, metadata={"help": LENGTH_CAP_HELP})


@dataclass
class GRPOStageConfig(OnlineRLConfig):
    """The GRPO stage: the shared online-RL settings plus GRPO's loss options."""

    loss_type: str = field(
        default="dapo", metadata={"help": "TRL GRPO loss: dapo, grpo, dr_grpo, bnpo, cispo, sapo, ..."}
    )
    scale_rewards: str = field(
        default="group", metadata={"help": "divide advantages by the reward std of the group, batch, or none"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")

    @classmethod
    def trl_config_class(cls) -> type:
        return GRPOTRLConfig


def _settings(cfg: GRPOStageConfig, data: StageData) -> dict[str, Any]:
    return {**shared_settings(cfg, data), "loss_type": cfg.loss_type, "scale_rewards": cfg.scale_rewards}


def _trainer_cls() -> type:
    from trl import GRPOTrainer

    return GRPOTrainer


def run_grpo(
    config: GRPOStageConfig, out_dir: str | Path | None = None, *, reward_fn: RewardFn | None = None
) -> Path:
    """Run (or skip, or resume) the GRPO stage; returns the saved model directory ``out_dir/model``.

    ``reward_fn`` overrides ``config.reward`` with a callable (Python API).
    """
    return run_online("grpo", GRPOStageConfig, _settings, _trainer_cls, config, out_dir, reward_fn)
