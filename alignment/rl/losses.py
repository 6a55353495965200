"""The PPO objective: clipped policy surrogate, clipped value loss, and per-token log-probs/entropy.

Losses average over all real response tokens of a minibatch (token-level mean), matching how the
advantages were whitened.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignment.rl.advantages import masked_mean


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token in ``tokens`` under ``logits`` (``(B, T, V)`` and ``(B, T)``).

    >>> logits = torch.log(torch.tensor([[[0.25, 0.75]]]))
    >>> logprobs_from_logits(logits, torch.tensor([[1]])).exp()
    tensor([[0.7500]])
    """
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the categorical distribution at every position of ``logits``.

    >>> entropy_from_logits(torch.zeros(1, 1, 4))
    tensor([[1.3863]])
    """
    logits = logits.float()
    probs = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens where the clipped term was the active one
    approx_kl: torch.Tensor  # k3 estimate of KL(old || new), for monitoring
    ratio_mean: torch.Tensor


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> PolicyLoss:
    """Clipped surrogate loss ``mean(max(-A r, -A clip(r, 1-e, 1+e)))`` with ``r = pi/pi_old``.

    >>> out = policy_loss(torch.log(torch.tensor([[0.6]])), torch.log(torch.tensor([[0.4]])),
    ...                   torch.tensor([[1.0]]), torch.ones(1, 1), clip_range=0.2)
    >>> round(out.loss.item(), 4), out.clip_fraction.item()
    (-1.2, 1.0)
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl, ratio_mean)


@dataclass(frozen=True)
class ValueLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> ValueLoss:
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -e, e) - R)^2))``.

    >>> out = value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[3.0]]),
    ...                  torch.ones(1, 1), clip_range=0.5)
    >>> out.loss.item(), out.clip_fraction.item()
    (3.125, 1.0)
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLoss(loss, clip_fraction)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)`` over masked entries (1 = perfect critic, <= 0 useless).

    >>> explained_variance(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2))
    1.0
    """
    from alignment.rl.advantages import masked_var

    var_target = masked_var(target, mask)
    if var_target <= 0:
        return float("nan")
    return float(1.0 - masked_var(target - predicted, mask) / var_target)
