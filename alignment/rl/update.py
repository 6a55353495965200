"""One PPO iteration on a batch of rollouts: token rewards with the KL penalty, GAE, whitening, and
several epochs of clipped-surrogate updates over shuffled minibatches."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignment.rl.advantages import gae, masked_mean, whiten
from alignment.rl.kl import KLEstimator, kl_per_token
from alignment.rl.losses import explained_variance, logprobs_from_logits, policy_loss, value_loss
from alignment.rl.rollout import policy_forward


@dataclass
class Rollouts:
    """A batch of sampled responses with everything the update needs (all ``(B, R)`` unless noted)."""

    query_ids: torch.Tensor  # (B, P), left-padded
    query_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor  # under the policy that sampled them
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # (B,) reward of each completion, after any missing-EOS penalty
    entropy: torch.Tensor | None = None  # per-token entropy of the sampling policy, for logging


@dataclass(frozen=True)
class PPOHyperparameters:
    """The knobs of one PPO iteration (see docs/ppo.md)."""

    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4
    mini_batch_size: int = 4
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    whiten_rewards: bool = False
    kl_estimator: KLEstimator = "k1"


class GuardTripped(RuntimeError):
    """Training must stop: a non-finite loss/reward or a KL above the ceiling."""


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards, kl)``: ``r_t = -beta * kl_t`` on every response token, plus the score on the last one.

    >>> r, kl = token_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -1.0, -0.5]]),
    ...                       torch.tensor([[-2.0, -1.5, -1.0]]), torch.ones(1, 3), kl_coef=0.1)
    >>> r
    tensor([[-0.1000, -0.0500,  0.9500]])
    """
    mask_f = mask.to(logprobs.dtype)
    kl = kl_per_token(logprobs, ref_logprobs, estimator) * mask_f
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards * mask_f, kl


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def ppo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rollouts: Rollouts,
    kl_coef: float,
    hp: PPOHyperparameters,
    *,
    generator: torch.Generator,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    clip_grad: Callable[[float], torch.Tensor] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """Compute advantages and run ``hp.ppo_epochs`` epochs of minibatch updates; return step statistics.

    ``backward`` and ``clip_grad`` default to plain torch; pass ``accelerator.backward`` and
    ``lambda n: accelerator.clip_grad_norm_(params, n)`` under accelerate. Raises :class:`GuardTripped`
    before the optimiser step when a loss is not finite, so the weights stay usable.
    """
    mask = rollouts.response_mask
    rewards, kl = token_rewards(
        rollouts.scores, rollouts.logprobs, rollouts.ref_logprobs, mask, kl_coef, hp.kl_estimator
    )
    if hp.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, rollouts.values, mask, hp.gamma, hp.lam)
    advantages = whiten(advantages, mask)
    if clip_grad is None:
        params = [p for p in model.parameters() if p.requires_grad]

        def clip_grad(max_norm: float) -> torch.Tensor:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)

    log: dict[str, list[float]] = {
        k: []
        for k in (
            "policy_loss",
            "value_loss",
            "clip_fraction",
            "value_clip_fraction",
            "approx_kl",
            "ratio",
            "grad_norm",
        )
    }
    batch_size = rollouts.query_ids.shape[0]
    for _ in range(hp.ppo_epochs):
        order = torch.randperm(batch_size, generator=generator)
        for start in range(0, batch_size, hp.mini_batch_size):
            idx = order[start : start + hp.mini_batch_size].to(mask.device)
            width = int(mask[idx].sum(dim=1).max())  # drop columns that are padding for every row
            m = mask[idx, :width]
            logits, values = policy_forward(
                model,
                rollouts.query_ids[idx],
                rollouts.query_mask[idx],
                rollouts.response_ids[idx, :width],
                m,
                hp.temperature,
            )
            logprobs = logprobs_from_logits(logits, rollouts.response_ids[idx, :width])
            pl = policy_loss(
                logprobs, rollouts.logprobs[idx, :width], advantages[idx, :width], m, hp.clip_range
            )
            vl = value_loss(
                values.float(), rollouts.values[idx, :width], returns[idx, :width], m, hp.clip_range_value
            )
            loss = pl.loss + hp.vf_coef * vl.loss
            if not torch.isfinite(loss):
                raise GuardTripped(
                    f"the PPO loss is not finite (policy loss {pl.loss.item()}, value loss {vl.loss.item()})"
                )
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            grad_norm = clip_grad(hp.max_grad_norm)
            if not torch.isfinite(torch.as_tensor(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                raise GuardTripped(f"the gradient norm is not finite ({float(grad_norm)})")
            optimizer.step()
            with torch.no_grad():
                log["policy_loss"].append(pl.loss.item())
                log["value_loss"].append(vl.loss.item())
                log["clip_fraction"].append(pl.clip_fraction.item())
                log["value_clip_fraction"].append(vl.clip_fraction.item())
                log["approx_kl"].append(pl.approx_kl.item())
                log["ratio"].append(pl.ratio_mean.item())
                log["grad_norm"].append(float(grad_norm))
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()  # the learning rate changes once per PPO iteration
    stats = {key: _mean(values) for key, values in log.items()}
    sequence_kl = kl.sum(dim=1)
    stats.update(
        kl=sequence_kl.mean().item(),
        non_score_reward=(-kl_coef * sequence_kl).mean().item(),
        explained_variance=explained_variance(rollouts.values, returns, mask),
        advantage_mean=masked_mean(advantages, mask).item(),
        return_mean=masked_mean(returns, mask).item(),
        value_mean=masked_mean(rollouts.values, mask).item(),
    )
    return stats
