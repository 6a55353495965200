"""``EvalConfig``: every evaluation setting, declared once.

The same dataclass is the flags of ``safealign eval`` (with their help text), the ``evaluation:``
section of a pipeline recipe, the settings a :class:`~alignment.evaluation.runner.Plan` carries, and the
keyword arguments of :func:`~alignment.evaluation.evaluate`. What the model is (``--model``) and where
outputs go (``--out``, ``--no-samples``) are not evaluation settings and stay outside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from alignment.errors import SafealignError


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EvalConfig:
    """How to evaluate a model: which suites on how many items, which split, batching and scorers."""

    preset: str = field(
        default="quick",
        metadata=_help("quick, standard, pipeline, full, or a preset YAML file (item limits per suite)"),
    )
    suites: list[str] | None = field(
        default=None, metadata=_help("comma-separated suites, or 'all' (default: the preset's)")
    )
    limit: int | None = field(
        default=None, metadata=_help("at most N items per suite (overrides the preset's limits)")
    )
    seed: int = field(default=0, metadata=_help("subsampling, generation and bootstrap seed"))
    split: str = field(
        default="heldout",
        metadata=_help(
            "heldout: the test groups of data builders train on (report numbers); validation: the "
            "validation groups carved from training (needs val_fraction; for choosing recipes); all: "
            "everything"
        ),
    )
    test_fraction: float = field(default=0.2, metadata=_help("held-out fraction of the split rule"))
    val_fraction: float = field(
        default=0.0, metadata=_help("share of groups carved from the training side as the validation split")
    )
    split_seed: int = field(default=0, metadata=_help("seed of the split rule"))
    base_model: str | None = field(default=None, metadata=_help("base model spec for kl_to_base"))
    device: str | None = field(
        default=None, metadata=_help("cpu, cuda, cuda:1, ... (default: best available)")
    )
    dtype: str | None = field(
        default=None,
        metadata=_help(
            "float32, bfloat16, float16, or fast: bfloat16 where the hardware computes it natively (GPUs, "
            "CPUs with AMX or AVX512-BF16), else the default (by device: float32 on CPU)"
        ),
    )
    batch_size: int = field(default=64, metadata=_help("most sequences per forward pass"))
    max_batch_tokens: int = field(default=4096, metadata=_help("most padded tokens per forward pass"))
    generation_batch_size: int = field(default=96, metadata=_help("most sequences per generate call"))
    padding_side: str = field(default="right", metadata=_help("padding side of log-likelihood batches"))
    toxicity_scorer: str = field(
        default="auto", metadata=_help("reward.toxicity scorer spec for generation suites")
    )
    stereotype_classifier: str | None = field(
        default=None,
        metadata=_help("folder of a trained stereotype classifier (default: the reward module's default)"),
    )
    baseline: str | None = field(
        default=None,
        metadata=_help(
            "evaluate the model as a training-free baseline: prompted (a debiasing instruction) or "
            "self_debias (Schick et al. 2021 decoding); see docs/metrics.md"
        ),
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Reject values no evaluation can use, naming the setting by its flag."""
        from alignment.evaluation.context import SPLIT_MODES

        if self.baseline is not None:
            from alignment.evaluation.baselines import get_baseline

            get_baseline(self.baseline)
        if self.split not in SPLIT_MODES:
            raise SafealignError(f"--split must be one of {', '.join(SPLIT_MODES)}, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise SafealignError(f"--limit must be a positive number of items, got {self.limit}")
        if not 0.0 < self.test_fraction < 1.0:
            raise SafealignError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0 - self.test_fraction:
            raise SafealignError(f"--val-fraction must be in [0, 1 - test fraction), got {self.val_fraction}")
        if self.split == "validation" and self.val_fraction == 0.0:
            raise SafealignError(
                "--split validation needs --val-fraction above 0 (the share carved from training)"
            )
        if min(self.batch_size, self.max_batch_tokens, self.generation_batch_size) < 1:
            raise SafealignError(
                "--batch-size, --max-batch-tokens and --generation-batch-size must be positive"
            )
        if self.padding_side not in ("left", "right"):
            raise SafealignError(f"--padding-side must be left or right, got {self.padding_side!r}")

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with some settings changed (unknown names are an error naming them)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise SafealignError(f"unknown evaluation setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)
