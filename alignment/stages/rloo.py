"""RLOO with TRL's ``RLOOTrainer`` and safealign's reward callables: ``run_rloo(config, out_dir)``.

REINFORCE with a leave-one-out baseline: each completion's advantage is its reward minus the mean
reward of the other ``num_generations - 1`` completions of the same prompt. See
:mod:`alignment.stages.trl_online` for what it shares with GRPO and PPO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import RLOOConfig

from alignment.rl.rollout import RewardFn
from alignment.stages.data import StageData
from alignment.stages.trl_online import (
    LENGTH_CAP_HELP,
    OnlineRLConfig,
    run_online,
    shared_settings,
)


@dataclass
class RLOOTRLConfig(RLOOConfig):
    """TRL's RLOOConfig plus the shared ``max_length`` setting, which TRL's online configs lack."""

    max_length: int | None = field(default=None, metadata={"help": LENGTH_CAP_HELP})


@dataclass
class RLOOStageConfig(OnlineRLConfig):
    """The RLOO stage: the shared online-RL settings plus advantage normalisation."""

    normalize_advantages: bool = field(
        default=False, metadata={"help": "scale the leave-one-out advantages to unit variance"}
    )

    @classmethod
    def trl_config_class(cls) -> type:
        return RLOOTRLConfig


def _settings(cfg: RLOOStageConfig, data: StageData) -> dict[str, Any]:
    return {**shared_settings(cfg, data), "normalize_advantages": cfg.normalize_advantages}


def _trainer_cls() -> type:
    from trl import RLOOTrainer

    return RLOOTrainer


def run_rloo(
    config: RLOOStageConfig, out_dir: str | Path | None = None, *, reward_fn: RewardFn | None = None
) -> Path:
    """Run (or skip, or resume) the RLOO stage; returns the saved model directory ``out_dir/model``.

    ``reward_fn`` overrides ``config.reward`` with a callable (Python API).
    """
    return run_online("rloo", RLOOStageConfig, _settings, _trainer_cls, config, out_dir, reward_fn)
