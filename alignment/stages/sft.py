"""Supervised fine-tuning with TRL's ``SFTTrainer``: ``run_sft(config, out_dir) -> out_dir/model``.

The dataset is TRL's conversational prompt/completion format (or ``messages`` / ``text``); by default
the loss covers the completion only, so the model learns the rewrite, not the instruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.stages.common import StageConfig
from alignment.stages.data import StageData
from alignment.stages.runner import StageContext, StageSpec, run_stage


@dataclass
class SFTStageConfig(StageConfig):
    """The SFT stage: the shared stage settings plus SFT's own."""

    completion_only_loss: bool | None = field(
        default=None,
        metadata={"help": "loss on the completion only (default: yes for prompt/completion data)"},
    )
    packing: bool = field(default=False, metadata={"help": "pack several short examples into one sequence"})

    @classmethod
    def trl_config_class(cls) -> type:
        from trl import SFTConfig

        return SFTConfig


def _settings(cfg: SFTStageConfig, data: StageData) -> dict[str, Any]:
    return {"completion_only_loss": cfg.completion_only_loss, "packing": cfg.packing}


def _make_trainer(ctx: StageContext) -> Any:
    from trl import SFTTrainer

    return SFTTrainer(**ctx.trainer_kwargs())


SFT = StageSpec(
    name="sft",
    data_kind="sft",
    config_cls=SFTStageConfig.trl_config_class,
    settings=_settings,
    make_trainer=_make_trainer,
)


def run_sft(config: SFTStageConfig, out_dir: str | Path | None = None) -> Path:
    """Run (or skip, or resume) the SFT stage; returns the saved model directory ``out_dir/model``."""
    return run_stage(SFT, config, out_dir)
