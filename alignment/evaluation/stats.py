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

Two evaluations of the same items (a base model and a trained stage, same items, same seed) are compared
item by item: :func:`paired_bootstrap` resamples the units once and applies the same draw to both
sides; :func:`mcnemar_exact` tests a proportion of binary per-item outcomes on its discordant items;
:func:`holm` adjusts a family of p-values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
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
    value = float(statistic(np.arange(n)))
    samples = np.array([statistic(idx) for idx in draws(n, clusters, seed, resamples)], dtype=float)
    low, high = _interval(samples, level)
    return Estimate(value, low, high, n)


def draws(
    n: int, clusters: Sequence[Any] | None = None, seed: int = 0, resamples: int = DEFAULT_RESAMPLES
) -> Iterator[np.ndarray]:
    """``resamples`` seeded bootstrap draws of unit indices (with repeats).

    With ``clusters`` (one label per unit), each draw picks as many clusters as there are, with
    replacement, and takes every unit of each picked cluster: a cluster is never split.

    >>> [sorted(d.tolist()) for d in draws(4, clusters=["a", "a", "b", "b"], seed=1, resamples=2)]
    [[0, 1, 2, 3], [2, 2, 3, 3]]
    """
    rng = np.random.default_rng(seed)
    if clusters is None:
        for _ in range(resamples):
            yield rng.integers(0, n, size=n)
        return
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} labels for {n} units")
    members: dict[Any, list[int]] = {}
    for i, label in enumerate(clusters):
        members.setdefault(label, []).append(i)
    groups = [np.asarray(m) for m in members.values()]
    for _ in range(resamples):
        picked = rng.integers(0, len(groups), size=len(groups))
        yield np.concatenate([groups[g] for g in picked])


@dataclass(frozen=True)
class PairedEstimate:
    """A change (stage minus base) measured on the same units: its value, bootstrap interval, a two-sided
    p-value for "no change", the number of units and the test that gave the p-value."""

    value: float
    low: float | None
    high: float | None
    p: float
    n: int
    test: str
    discordant: tuple[int, int] | None = None  # McNemar: (units 1 -> 0, units 0 -> 1)


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of "no change" from bootstrap draws of a difference: twice the smaller share of
    draws on either side of zero (counting zero on both sides), with the usual +1 so it is never 0.
    It is below 0.05 exactly when the matching percentile interval excludes zero (up to that +1).

    >>> bootstrap_p(np.zeros(99)), round(bootstrap_p(np.arange(1.0, 100.0)), 3)
    (1.0, 0.02)
    """
    differences = differences[np.isfinite(differences)]
    if differences.size == 0:
        return math.nan
    tail = min(int((differences <= 0).sum()), int((differences >= 0).sum()))
    return min(1.0, 2.0 * (tail + 1) / (differences.size + 1))


def paired_bootstrap(
    base: Callable[[np.ndarray], float],
    stage: Callable[[np.ndarray], float],
    n: int,
    *,
    clusters: Sequence[Any] | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = LEVEL,
) -> PairedEstimate:
    """``stage - base`` of a statistic over the same ``n`` units, with a paired percentile bootstrap.

    ``base(indices)`` and ``stage(indices)`` compute the metric of each side from unit indices; every
    draw (whole ``clusters`` when given) is applied to both sides, so what the two share cancels out.
    Draws on which the difference is undefined (NaN) are left out.

    >>> a, b = np.array([0.0, 1.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0])
    >>> est = paired_bootstrap(lambda i: a[i].mean(), lambda i: b[i].mean(), 4, seed=0)
    >>> est.value, est.n, 0.0 <= est.low <= est.value <= est.high
    (0.25, 4, True)
    """
    if n == 0:
        return PairedEstimate(math.nan, None, None, math.nan, 0, "paired bootstrap")
    everything = np.arange(n)
    value = float(stage(everything)) - float(base(everything))
    differences = np.array(
        [float(stage(idx)) - float(base(idx)) for idx in draws(n, clusters, seed, resamples)], dtype=float
    )
    low, high = _interval(differences, level)
    test = "paired cluster bootstrap" if clusters is not None else "paired bootstrap"
    return PairedEstimate(value, low, high, bootstrap_p(differences), n, test)


def mcnemar_exact(base: Sequence[bool], stage: Sequence[bool]) -> tuple[float, tuple[int, int]]:
    """Exact McNemar test of paired binary outcomes: ``(two-sided p, (1 -> 0 count, 0 -> 1 count))``.

    Only discordant units carry information; under "no change" each of them flips either way with
    probability 1/2, so the p-value is scipy's exact binomial test on them (1.0 when none flip).

    >>> mcnemar_exact([0, 0, 1, 1], [1, 1, 1, 1])
    (0.5, (0, 2))
    """
    from scipy.stats import binomtest

    a, b = np.asarray(base, dtype=bool), np.asarray(stage, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} and {b.size}")
    lost, gained = int((a & ~b).sum()), int((~a & b).sum())
    if lost + gained == 0:
        return 1.0, (0, 0)
    return float(binomtest(gained, lost + gained, 0.5).pvalue), (lost, gained)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error stays at the level for any dependence.

    The i-th smallest of m p-values is multiplied by ``m - i`` (i from 0), then made non-decreasing in
    that order and capped at 1. NaN entries stay NaN and do not count toward m.

    >>> holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    """
    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()
