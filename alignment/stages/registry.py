"""The training stages by name, for the CLI (``safealign train``) and the pipeline's recipes.

Each stage is the module ``alignment.stages.<name>`` with a ``<NAME>StageConfig`` dataclass and a
``run_<name>(config, out_dir)`` function. Modules are imported on first use (they pull in TRL).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from alignment.errors import SafealignError

STAGES = ("sft", "dpo", "ppo", "grpo", "rloo")


def stage_entry(name: str) -> tuple[type, Callable[..., Path]]:
    """``(ConfigClass, run_function)`` of a stage, e.g. ``(SFTStageConfig, run_sft)``.

    >>> stage_entry("sft")[0].__name__
    'SFTStageConfig'
    """
    if name not in STAGES:
        raise SafealignError(f"unknown stage {name!r}: one of {', '.join(STAGES)}")
    module = importlib.import_module(f"alignment.stages.{name}")
    return getattr(module, f"{name.upper()}StageConfig"), getattr(module, f"run_{name}")
