"""Per-token KL estimators between the policy and the reference, and KL coefficient controllers.

With ``d = log pi(a|s) - log pi_ref(a|s)`` for the sampled token ``a`` (Schulman, "Approximating KL
divergence", 2020):

- ``k1 = d``: unbiased for KL(pi || pi_ref); single tokens can be negative. The classic RLHF penalty.
- ``k2 = d^2 / 2``: biased, always >= 0, low variance when the policies are close.
- ``k3 = exp(-d) - 1 + d``: unbiased and always >= 0, low variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token KL estimate for the sampled tokens.

    >>> d = torch.tensor([0.5, -0.5])
    >>> kl_per_token(d, torch.zeros(2), "k1"), kl_per_token(d, torch.zeros(2), "k2")
    (tensor([ 0.5000, -0.5000]), tensor([0.1250, 0.1250]))
    >>> kl_per_token(torch.tensor([0.0]), torch.tensor([0.0]), "k3")
    tensor([0.])
    """
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff**2
    if estimator == "k3":
        return torch.expm1(-diff) + diff
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")


@dataclass
class KLController:
    """The KL penalty coefficient ``beta``: fixed, or adapted towards a target KL (Ziegler et al., 2019).

    Adaptive update after each step with measured KL ``kl`` over ``n`` rollouts:
    ``e = clip(kl / target - 1, -0.2, 0.2)`` and ``beta <- beta * (1 + e * n / horizon)``.

    >>> c = KLController(value=0.1, target=6.0, horizon=100)
    >>> _ = c.update(kl=12.0, n_steps=10)
    >>> round(c.value, 4)
    0.102
    >>> KLController(value=0.1).update(kl=99.0, n_steps=10)
    0.1
    """

    value: float
    target: float | None = None  # None: fixed coefficient
    horizon: float = 10000.0

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
