"""Policy with value head, the reference policy, and collecting scored rollouts for the PPO stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from alignment.rl.prompts import PromptSet
from alignment.rl.rollout import (
    RewardFn,
    reference_logprobs,
    reward_components,
    rollout_statistics,
    sample_and_score,
)
from alignment.rl.scoring import heldout_summary, score_as_stage
from alignment.rl.update import Rollouts
from alignment.rl.value_head import PolicyWithValue
from alignment.stages.common import load_causal_lm, load_stage_model

if TYPE_CHECKING:
    from alignment.stages.ppo.config import PPOStageConfig

REFERENCE_ADAPTER = "reference"


@dataclass
class Models:
    """The trained policy (with its value head), how to get reference log-probs, and the tokenizer."""

    policy: PolicyWithValue
    tokenizer: Any
    reference: Any  # a frozen LM, or None when the reference is the base under the (disabled) adapters
    reference_adapter: bool  # the reference is a frozen copy of a continued adapter
    saved_as_adapter: bool

    def peft_model(self) -> Any:
        return self.policy.policy

    @contextmanager
    def reference_lm(self) -> Iterator[Any]:
        """The LM whose log-probs define the reference policy (no second copy under LoRA)."""
        if self.reference is not None:
            yield self.reference
        elif self.reference_adapter:
            peft = self.peft_model()
            peft.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
            try:
                yield peft
            finally:
                peft.set_adapter("default")
        else:
            with self.peft_model().disable_adapter():
                yield self.peft_model()


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: PPO's ratios need the same log-probs in rollout and update."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_models(cfg: PPOStageConfig, source: Any, precision: Any) -> Models:
    """Policy (+ value head) and reference from disk; LoRA keeps a single copy of the base weights."""
    model, tokenizer, peft_config = load_stage_model(cfg, source, precision)
    reference = None
    reference_adapter = False
    if cfg.adapter == "full":
        reference = load_causal_lm(source, precision, trust_remote_code=cfg.trust_remote_code)
        reference.requires_grad_(False).eval()
    elif peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    else:  # continuing a LoRA adapter: the reference is a frozen copy of that adapter
        model.load_adapter(source.path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        model.set_adapter("default")
        reference_adapter = True
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = PolicyWithValue(model)
    disable_dropout(policy)
    return Models(policy, tokenizer, reference, reference_adapter, saved_as_adapter=cfg.adapter != "full")


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS plus the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


# --------------------------------------------------------------------------------------- rollouts


@dataclass
class Sampled:
    rollouts: Rollouts
    completions: list[Any]
    ended: torch.Tensor
    raw_scores: list[float]
    components: dict[str, float]


def collect(
    models: Models,
    accelerator: Any,
    cfg: PPOStageConfig,
    reward_fn: RewardFn,
    eos_ids: list[int],
    prompts: list[Any],
    token_ids: list[list[int]],
    columns: dict[str, list[Any]],
) -> Sampled:
    """Sample, score and evaluate one batch of prompts (no gradients)."""
    policy = models.policy
    with torch.no_grad(), accelerator.autocast():
        sampled = sample_and_score(
            policy.policy,
            models.tokenizer,
            reward_fn,
            prompts,
            token_ids,
            columns,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_ids=eos_ids,
            device=accelerator.device,
        )
        query_ids, query_mask = sampled.query_ids, sampled.query_mask
        responses, mask, ended = sampled.response_ids, sampled.response_mask, sampled.ended
        raw = sampled.scores
        scores = torch.tensor(raw, dtype=torch.float32, device=accelerator.device)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~ended).float()
        chunk = cfg.per_device_train_batch_size
        logprobs, values, entropy = rollout_statistics(
            policy, query_ids, query_mask, responses, mask, cfg.temperature, chunk
        )
        with models.reference_lm() as ref:
            ref_logprobs = reference_logprobs(
                ref, query_ids, query_mask, responses, mask, cfg.temperature, chunk
            )
    rollouts = Rollouts(
        query_ids, query_mask, responses, mask, logprobs, ref_logprobs, values, scores, entropy=entropy
    )
    return Sampled(rollouts, sampled.completions, ended, raw, reward_components(reward_fn))


def global_mean(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    """Average per-process statistics over processes (NaN stays NaN)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(tensor, reduction="mean")
    return {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}


def evaluate_heldout(
    models: Models,
    accelerator: Any,
    cfg: PPOStageConfig,
    reward_fn: RewardFn,
    eos_ids: list[int],
    data: PromptSet,
    at_start: bool = False,
) -> tuple[dict[str, float], list[float]]:
    """Mean reward, KL and length of ``eval_samples`` sampled completions per held-out prompt (sharded over
    processes, the same seed every time), and the mean reward of each prompt in prompt order.

    ``at_start``: the policy is still the starting model, whose KL to the reference is 0 by
    construction, so the two teacher-forced passes that measure it are skipped."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    indices = list(range(rank, len(data), world))
    result = score_as_stage(
        cfg,
        models.peft_model(),
        models.tokenizer,
        data,
        indices,
        reward_fn,
        eos_ids,
        samples=cfg.eval_samples,
        seed=cfg.seed + 7919 + rank,
        device=accelerator.device,
        reference=None if at_start else models.reference_lm,
        autocast=accelerator.autocast,
    )
    kl = result.kl.sum(1) if result.kl is not None else [0.0] * len(indices)
    rows = list(zip(indices, result.per_prompt(), kl, result.lengths.sum(1), strict=True))
    if world > 1:
        rows = sorted(gather_object(rows))
    reward = [float(r[1]) for r in rows]
    summary = heldout_summary(reward, [r[2] for r in rows], [r[3] for r in rows], cfg.eval_samples)
    return summary, reward
