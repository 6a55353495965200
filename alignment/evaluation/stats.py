"""Point estimates with bootstrap 95% confidence intervals.

Every headline number is reported with a percentile bootstrap interval: resample the evaluation units
(items, or whole clusters such as StereoSet target terms) with replacement, recompute the metric, and
take the 2.5th and 97.5th percentiles. The resampling is seeded, so the same inputs give the same
interval.

>>> est = mean_ci([1, 0, 1, 1], seed=0)
>>> est.value, est.n
(0.75, 4)
>>> 0 <= est.low <= est.value <= est.high <= 1
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric value, its bootstrap interval (None when undefined) and the number of units behind it."""

    value: float
    low: float | None
    high: float | None
    n: int

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. a fraction as a percentage)."""
        low = None if self.low is None else self.low * factor
        high = None if self.high is None else self.high * factor
        return Estimate(self.value * factor, low, high, self.n)


def _interval(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None, None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def mean_ci(
    values: Sequence[float], *, seed: int = 0, resamples: int = DEFAULT_RESAMPLES, level: float = LEVEL
) -> Estimate:
    """Mean of ``values`` with a bootstrap interval (vectorised)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(math.nan, None, None, 0)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.size, size=(resamples, data.size))
    low, high = _interval(data[index].mean(axis=1), level)
    return Estimate(float(data.mean()), low, high, int(data.size))


def statistic_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    clusters: Sequence[Any] | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = LEVEL,
) -> Estimate:
    """Any statistic of ``n`` units with a bootstrap interval.

    ``statistic(indices)`` computes the metric from an array of unit indices (with repeats). With
    ``clusters`` (one label per unit), whole clusters are resampled, which keeps the interval honest
    when units are not independent (several StereoSet items share a target term, and the metric
    averages per term first). A statistic that is undefined on a resample returns NaN; those resamples
    are left out.

    >>> values = np.array([3.0, 1.0, 2.0])
    >>> statistic_ci(lambda idx: float(values[idx].max()), 3).value
    3.0
    """
    if n == 0:
        return Estimate(math.nan, None, None, 0)
    everything = np.arange(n)
    value = float(statistic(everything))
    rng = np.random.default_rng(seed)
    if clusters is None:
        draws = (rng.integers(0, n, size=n) for _ in range(resamples))
    else:
        if len(clusters) != n:
            raise ValueError(f"clusters has {len(clusters)} labels for {n} units")
        members: dict[Any, list[int]] = {}
        for i, label in enumerate(clusters):
            members.setdefault(label, []).append(i)
        groups = [np.asarray(m) for m in members.values()]

        def cluster_draw() -> np.ndarray:
            picked = rng.integers(0, len(groups), size=len(groups))
            return np.concatenate([groups[g] for g in picked])

        draws = (cluster_draw() for _ in range(resamples))
    samples = np.array([statistic(idx) for idx in draws], dtype=float)
    low, high = _interval(samples, level)
    return Estimate(value, low, high, n)
