"""Masked statistics, whitening and generalised advantage estimation over response tokens.

All functions take ``(batch, response_length)`` tensors and a ``mask`` of the same shape that is 1 on
real response tokens and 0 on the padding after a completion ends. Padding never contributes to a
statistic and always comes back as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``).

    >>> masked_mean(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1, 1, 0]]))
    tensor(1.5000)
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1 (Bessel-corrected unless ``unbiased=False``).

    >>> masked_var(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
    tensor(2.)
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale ``values`` to unit variance over the masked entries, and to zero mean when ``shift_mean``.

    Without ``shift_mean`` the mean is kept (used for rewards, whose sign carries meaning).

    >>> whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    mean = masked_mean(values, mask)
    scaled = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        scaled = scaled + mean
    return scaled * mask.to(values.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016) over right-padded responses.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``; the value
    after the last real token is 0 (the episode ends with the completion). Returns
    ``(advantages, returns)`` with ``returns = advantages + values``, both 0 on padding.

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> adv, ret
    (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    mask = mask.to(values.dtype)
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        reversed_advantages.append(last)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    return advantages, (advantages + values) * mask


@dataclass
class ScoreNormalizer:
    """Standardise sequence scores before they enter the returns: ``none``, ``batch`` (this batch's mean
    and sd) or ``running`` (mean and sd of every score seen so far, this batch included; Chan et al.'s
    parallel update). ``state`` round-trips through checkpoints so a resumed run normalises the same way.

    >>> n = ScoreNormalizer("running")
    >>> [[round(v, 4) for v in n(torch.tensor(batch)).tolist()] for batch in ([1.0, 3.0], [5.0, 7.0])]
    [[-0.7071, 0.7071], [0.3873, 1.1619]]
    """

    mode: str = "none"
    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def __call__(self, scores: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``scores`` standardised; the statistics come from ``pooled`` (all processes' scores) when given."""
        stats = (scores if pooled is None else pooled).double()
        if self.mode == "none":
            return scores
        if self.mode == "batch":
            mean, sd = float(stats.mean()), float(stats.std()) if stats.numel() > 1 else 0.0
        else:
            self.update(stats)
            mean, sd = self.mean, math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0
        return ((scores.double() - mean) / (sd + 1e-8)).to(scores.dtype)

    def update(self, values: torch.Tensor) -> None:
        n, mean = float(values.numel()), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    def state(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}
