"""One PPO iteration on a batch of rollouts: token rewards with the KL penalty, GAE, whitening, and
several epochs of clipped-surrogate updates over shuffled minibatches."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from alignment.rl.advantages import gae, masked_mean, whiten
from alignment.rl.anchor import Anchor, anchor_nll
from alignment.rl.kl import KLEstimator, kl_per_token
from alignment.rl.losses import (
    PolicyLoss,
    ValueLoss,
    explained_variance,
    logprobs_from_logits,
    policy_loss,
    value_loss,
)
from alignment.rl.rollout import GuardTripped, policy_forward


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
    mini_batch_size: int = 4  # rollouts per optimiser step
    micro_batch_size: int = 4  # rollouts per forward/backward pass (gradient accumulation below that)
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    whiten_rewards: bool = False
    kl_estimator: KLEstimator = "k1"

    def optimizer_steps(self, rollouts: int) -> int:
        """Optimiser steps of one PPO update over ``rollouts`` rollouts.

        >>> PPOHyperparameters(ppo_epochs=2, mini_batch_size=8).optimizer_steps(16)
        4
        """
        return self.ppo_epochs * math.ceil(rollouts / self.mini_batch_size)


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
    no_sync: Callable[[], AbstractContextManager] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    critic_only: Sequence[torch.nn.Parameter] | None = None,
    anchor: Anchor | None = None,
    ptx_coef: float = 0.0,
) -> dict[str, float]:
    """Compute advantages and run ``hp.ppo_epochs`` epochs of minibatch updates; return step statistics.

    Each minibatch of ``hp.mini_batch_size`` rollouts is one optimiser step, accumulated over micro-batches
    of ``hp.micro_batch_size`` whose losses are weighted by their token counts, so the gradient is the
    token mean over the whole minibatch. ``backward``, ``clip_grad`` and ``no_sync`` default to plain
    torch; pass ``accelerator.backward``, ``lambda n: accelerator.clip_grad_norm_(params, n)`` and
    ``lambda: accelerator.no_sync(model)`` under accelerate. Raises :class:`GuardTripped` before the
    optimiser step when a loss or the gradient norm is not finite.

    ``critic_only`` (the policy's parameters) makes this a value warm-up iteration: the loss is the value
    loss alone and the gradients of those parameters are dropped before clipping, so only the value
    head moves (AdamW skips parameters without a gradient).

    ``anchor`` with ``ptx_coef`` > 0 adds ``ptx_coef`` times the policy's mean token NLL on anchor
    continuations to every optimiser step (PPO-ptx, :mod:`alignment.rl.anchor`), each step its own
    equal share of ``anchor``'s rows (fresh reference samples: a step never revisits another's); logged
    as ``ptx_loss``.
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

    names = ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl", "ratio")
    log: dict[str, list[float]] = {name: [] for name in (*names, "grad_norm")}
    ptx = anchor is not None and ptx_coef > 0 and critic_only is None
    if ptx:
        log["ptx_loss"] = []
        steps = hp.optimizer_steps(rollouts.query_ids.shape[0])
        anchor_rows = torch.arange(anchor.query_ids.shape[0], device=mask.device).tensor_split(steps)
    batch_size = rollouts.query_ids.shape[0]
    for _ in range(hp.ppo_epochs):
        order = torch.randperm(batch_size, generator=generator).to(mask.device)
        for start in range(0, batch_size, hp.mini_batch_size):
            minibatch = order[start : start + hp.mini_batch_size]
            tokens = mask[minibatch].sum().clamp(min=1)
            micro_batches = minibatch.split(hp.micro_batch_size)
            totals = dict.fromkeys(names, 0.0)
            optimizer.zero_grad(set_to_none=True)
            if ptx:  # first, so that the last PPO micro-batch is the one that synchronises gradients
                log["ptx_loss"].append(
                    _anchor_backward(
                        model, anchor, anchor_rows[len(log["grad_norm"])], ptx_coef, hp, backward, no_sync
                    )
                )
            for j, idx in enumerate(micro_batches):
                sync = no_sync is None or j == len(micro_batches) - 1
                with nullcontext() if sync else no_sync():
                    weight = mask[idx].sum() / tokens
                    parts = _micro_batch_losses(model, rollouts, advantages, returns, idx, hp)
                    policy_term = parts[0].loss if critic_only is None else 0.0
                    loss = (policy_term + hp.vf_coef * parts[1].loss) * weight
                    if not torch.isfinite(loss):
                        optimizer.zero_grad(set_to_none=True)
                        raise GuardTripped(
                            f"the PPO loss is not finite (policy loss {parts[0].loss.item()}, "
                            f"value loss {parts[1].loss.item()})"
                        )
                    backward(loss)
                w = weight.item()
                pl, vl = parts
                for name, value in zip(
                    names,
                    (pl.loss, vl.loss, pl.clip_fraction, vl.clip_fraction, pl.approx_kl, pl.ratio_mean),
                    strict=True,
                ):
                    totals[name] += w * value.item()
            for param in critic_only or ():
                param.grad = None
            grad_norm = clip_grad(hp.max_grad_norm)
            if not torch.isfinite(torch.as_tensor(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                raise GuardTripped(f"the gradient norm is not finite ({float(grad_norm)})")
            optimizer.step()
            for name in names:
                log[name].append(totals[name])
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


def _anchor_backward(
    model: torch.nn.Module,
    anchor: Anchor,
    rows: torch.Tensor,
    ptx_coef: float,
    hp: PPOHyperparameters,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], AbstractContextManager] | None,
) -> float:
    """Backward ``ptx_coef`` x the token-mean NLL of the anchor ``rows``, in micro-batches weighted by
    their token counts (without synchronising gradients); returns that NLL."""
    tokens = anchor.response_mask[rows].sum().clamp(min=1)
    total = 0.0
    for idx in rows.split(hp.micro_batch_size):
        with nullcontext() if no_sync is None else no_sync():
            weight = anchor.response_mask[idx].sum() / tokens
            nll = anchor_nll(model, anchor, idx)
            if not torch.isfinite(nll):
                raise GuardTripped(f"the anchor (ptx) loss is not finite ({nll.item()})")
            backward(ptx_coef * weight * nll)
        total += (weight * nll).item()
    return total


def _micro_batch_losses(
    model: torch.nn.Module,
    rollouts: Rollouts,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    idx: torch.Tensor,
    hp: PPOHyperparameters,
) -> tuple[PolicyLoss, ValueLoss]:
    mask = rollouts.response_mask[idx]
    width = max(int(mask.sum(dim=1).max()), 1)  # drop columns that are padding in every row
    mask = mask[:, :width]
    response_ids = rollouts.response_ids[idx, :width]
    logits, values = policy_forward(
        model, rollouts.query_ids[idx], rollouts.query_mask[idx], response_ids, mask, hp.temperature
    )
    logprobs = logprobs_from_logits(logits, response_ids)
    pl = policy_loss(logprobs, rollouts.logprobs[idx, :width], advantages[idx, :width], mask, hp.clip_range)
    vl = value_loss(
        values.float(), rollouts.values[idx, :width], returns[idx, :width], mask, hp.clip_range_value
    )
    return pl, vl
