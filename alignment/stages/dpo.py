"""Preference optimisation with TRL's ``DPOTrainer``: ``run_dpo(config, out_dir) -> out_dir/model``.

The reference model is always read from disk: from ``ref_model`` when given, else from the same saved
path as the policy (for LoRA, the policy with its adapter switched off), never from a model in memory.

``loss_type: parity`` trains toward *indifference* between chosen and rejected, for the data builders'
``parity`` pairs: the scores are the policy's own log-likelihoods (reference-free) and the loss is EXO
with ε = 0.5, whose minimum is log p(chosen) = log p(rejected), the same optimum as DPO with label
smoothing 0.5. Scoring against the reference would make it a no-op, since the policy starts as the
reference and the loss starts at its minimum. ``auto`` picks ``parity`` for a parity dataset and
``sigmoid`` (standard DPO) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.stages.common import StageConfig, load_causal_lm, resolve_input_model
from alignment.stages.data import StageData
from alignment.stages.runner import StageContext, StageSpec, run_stage

TRL_LOSSES = frozenset(
    {
        "sigmoid",
        "hinge",
        "ipo",
        "exo_pair",
        "nca_pair",
        "robust",
        "bco_pair",
        "sppo_hard",
        "aot",
        "aot_unpaired",
        "apo_zero",
        "apo_down",
        "discopop",
        "sft",
        "sigmoid_norm",
    }
)
LOSS_CHOICES = ("auto", "parity", *sorted(TRL_LOSSES))


@dataclass
class DPOStageConfig(StageConfig):
    """The DPO stage: the shared stage settings plus DPO's own."""

    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate"})
    beta: float = field(
        default=0.1, metadata={"help": "DPO beta: higher keeps the policy closer to the reference"}
    )
    loss_type: str = field(
        default="auto",
        metadata={
            "help": "auto (parity for a parity dataset, else sigmoid), parity, or TRL loss names "
            "(sigmoid, ipo, hinge, robust, ...; comma-separated to combine)"
        },
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing for the robust/exo_pair/aot losses (parity sets 0.5)"}
    )
    ref_model: str | None = field(
        default=None,
        metadata={"help": "reference model spec (default: the model being trained, read from disk)"},
    )
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "score the reference once before training (less memory)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [n.strip() for n in str(self.loss_type).split(",") if n.strip()]
        if not names:
            raise ValueError("loss_type is empty")
        for name in names:
            if name not in LOSS_CHOICES:
                raise ValueError(f"loss_type {name!r} is not one of {', '.join(LOSS_CHOICES)}")
        if len(names) > 1 and ({"auto", "parity"} & set(names)):
            raise ValueError("loss_type 'auto' and 'parity' cannot be combined with other losses")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing <= 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5], got {self.label_smoothing}")

    @classmethod
    def trl_config_class(cls) -> type:
        from trl import DPOConfig

        return DPOConfig


@dataclass(frozen=True)
class LossChoice:
    """The loss a DPO run uses once ``auto`` and ``parity`` are resolved."""

    loss_type: tuple[str, ...]
    label_smoothing: float
    reference_free: bool
    requested: str


def resolve_loss(cfg: DPOStageConfig, strategy: str | None) -> LossChoice:
    """Resolve ``auto``/``parity`` against the dataset's builder strategy.

    >>> resolve_loss(DPOStageConfig(loss_type="auto"), "parity")
    LossChoice(loss_type=('exo_pair',), label_smoothing=0.5, reference_free=True, requested='auto')
    >>> resolve_loss(DPOStageConfig(loss_type="auto"), "less_over_more").loss_type
    ('sigmoid',)
    """
    names = tuple(n.strip() for n in cfg.loss_type.split(",") if n.strip())
    if names == ("auto",):
        names = ("parity",) if strategy == "parity" else ("sigmoid",)
    if names == ("parity",):
        return LossChoice(("exo_pair",), 0.5, True, cfg.loss_type)
    return LossChoice(names, cfg.label_smoothing, False, cfg.loss_type)


def _settings(cfg: DPOStageConfig, data: StageData) -> dict[str, Any]:
    loss = resolve_loss(cfg, data.info.get("strategy"))
    return {
        "beta": cfg.beta,
        "loss_type": list(loss.loss_type),
        "label_smoothing": loss.label_smoothing,
        # reference-free scoring: the "reference log-probs" are zeros, filled once before training
        "precompute_ref_log_probs": cfg.precompute_ref_log_probs or loss.reference_free,
    }


def _describe(cfg: DPOStageConfig, data: StageData) -> dict[str, Any]:
    loss = resolve_loss(cfg, data.info.get("strategy"))
    if loss.reference_free:
        reference = "none (parity: reference-free scores)"
    elif cfg.ref_model:
        reference = cfg.ref_model
    elif cfg.adapter != "full" and resolve_input_model(cfg.model).kind == "adapter":
        reference = "a frozen copy of the input adapter as loaded from disk"
    elif cfg.adapter != "full":
        reference = "the input model from disk (the policy with its new adapter disabled)"
    else:
        reference = "the input model, loaded again from disk"
    warning = None
    if data.info.get("strategy") == "parity" and not loss.reference_free:
        warning = "the dataset was built with the parity strategy but the loss is not 'parity'"
    return {
        "loss": {
            "requested": loss.requested,
            "loss_type": list(loss.loss_type),
            "label_smoothing": loss.label_smoothing,
            "reference_free": loss.reference_free,
            "beta": cfg.beta,
            "reference": reference,
            **({"warning": warning} if warning else {}),
        }
    }


def _reference_free_trainer(base: type) -> type:
    """A DPOTrainer whose reference log-probabilities are zero: the scores are the policy's own."""
    import torch

    class ReferenceFreeDPOTrainer(base):
        def compute_ref_log_probs(self, model, inputs):
            pairs = inputs["input_ids"].shape[0] // 2  # the batch holds chosen rows, then rejected rows
            zeros = torch.zeros(pairs, device=inputs["input_ids"].device)
            return zeros, zeros.clone()

    return ReferenceFreeDPOTrainer


def _make_trainer(ctx: StageContext) -> Any:
    from peft import PeftModel
    from trl import DPOTrainer

    cfg: DPOStageConfig = ctx.cfg
    loss = resolve_loss(cfg, ctx.data.info.get("strategy"))
    ref_model = None
    if not loss.reference_free:
        if cfg.ref_model:
            ref_model = load_causal_lm(
                resolve_input_model(cfg.ref_model), ctx.precision, trust_remote_code=cfg.trust_remote_code
            )
        elif (
            ctx.peft_config is None
            and not isinstance(ctx.model, PeftModel)
            and not ctx.args.precompute_ref_log_probs
        ):
            # Full fine-tuning: read the reference from the same saved path as the policy (TRL would
            # otherwise reload it from config._name_or_path, which may name a different checkpoint).
            ref_model = load_causal_lm(ctx.source, ctx.precision, trust_remote_code=cfg.trust_remote_code)
    trainer_cls = _reference_free_trainer(DPOTrainer) if loss.reference_free else DPOTrainer
    return trainer_cls(**ctx.trainer_kwargs(ref_model=ref_model))


DPO = StageSpec(
    name="dpo",
    data_kind="preference",
    config_cls=DPOStageConfig.trl_config_class,
    settings=_settings,
    make_trainer=_make_trainer,
    describe=_describe,
)


def run_dpo(config: DPOStageConfig, out_dir: str | Path | None = None) -> Path:
    """Run (or skip, or resume) the DPO stage; returns the saved model directory ``out_dir/model``."""
    return run_stage(DPO, config, out_dir)
