"""Weighted sums of named reward components, with transforms and optional running normalization.

>>> def short(prompts, completions, **kw):
...     return [1.0 if len(c) < 6 else 0.0 for c in completions]
>>> def rude(prompts, completions, **kw):
...     return [0.9 if "idiot" in c else 0.1 for c in completions]
>>> fn = CompositeReward([Component("short", short, weight=0.5),
...                       Component("polite", rude, weight=2.0, transform="one_minus")])
>>> [round(r, 3) for r in fn(["q", "q"], ["idiot", "hello there"])]
[0.7, 1.8]
>>> {k: [round(v, 3) for v in vs] for k, vs in fn.last_components.items()}
{'short': [1.0, 0.0], 'polite': [0.1, 0.9]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignment.errors import SafealignError

RewardFn = Callable[..., Sequence[float]]

TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda x: x,
    "one_minus": lambda x: 1.0 - x,
    "negate": lambda x: -x,
}


class RunningStats:
    """Running mean and variance over every value seen so far (Chan et al.'s batch update).

    >>> stats = RunningStats()
    >>> stats.update([1.0, 2.0, 3.0]); stats.update([4.0])
    >>> stats.count, stats.mean, round(stats.std, 4)
    (4, 2.5, 1.118)
    """

    def __init__(self) -> None:
        self.count, self.mean, self._m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        n = len(values)
        if n == 0:
            return
        batch_mean = sum(values) / n
        batch_m2 = sum((v - batch_mean) ** 2 for v in values)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self._m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation (0 before any value)."""
        return math.sqrt(self._m2 / self.count) if self.count else 0.0

    def normalize(self, values: Sequence[float], eps: float = 1e-6) -> list[float]:
        """``(v - mean) / std`` with the current statistics (only centred while std is ~0)."""
        scale = self.std if self.std > eps else 1.0
        return [(v - self.mean) / scale for v in values]


@dataclass
class Component:
    """One named term of a composite: ``weight * normalize(transform(fn(...)))``."""

    name: str
    fn: RewardFn
    weight: float = 1.0
    transform: str = "identity"
    normalize: bool = False
    source: str = ""  # where it came from (registry name, dotted path), for errors and manifests
    stats: RunningStats = field(default_factory=RunningStats, repr=False)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise SafealignError(
                f"reward component {self.name!r}: unknown transform {self.transform!r}; "
                f"known: {', '.join(TRANSFORMS)}"
            )
        if not callable(self.fn):
            raise SafealignError(
                f"reward component {self.name!r}: {self.source or self.fn!r} is not callable"
            )
        if not math.isfinite(self.weight):
            raise SafealignError(f"reward component {self.name!r}: weight must be a finite number")


def check_rewards(values: Any, expected: int, name: str) -> list[float]:
    """The output of a reward function as floats, or an error naming the function and the bad entry.

    >>> check_rewards([1, 0.5], 2, "demo")
    [1.0, 0.5]
    >>> check_rewards([1.0, float("nan")], 2, "demo")
    Traceback (most recent call last):
    ...
    alignment.errors.SafealignError: reward 'demo' returned nan for completion 1; rewards must be finite
    """
    try:
        values = list(values)
    except TypeError as exc:
        raise SafealignError(
            f"reward {name!r} returned {type(values).__name__}, not a list of floats"
        ) from exc
    if len(values) != expected:
        raise SafealignError(f"reward {name!r} returned {len(values)} values for {expected} completions")
    out = []
    for i, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise SafealignError(
                f"reward {name!r} returned {value!r} for completion {i}; rewards must be finite"
            )
        out.append(number)
    return out


class CompositeReward:
    """A reward function (TRL signature) that sums weighted components.

    ``normalize=True`` normalizes every component with its running mean and standard deviation
    (a component can also ask for it alone). After each call, ``last_raw`` holds each component's
    output and ``last_components`` the values that entered the weighted sum. When TRL passes
    ``log_metric``, the mean of each component is logged as ``reward/<name>``.
    """

    def __init__(self, components: Sequence[Component], normalize: bool = False, name: str = "composite"):
        if not components:
            raise SafealignError("a composite reward needs at least one component")
        names = [c.name for c in components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SafealignError(
                f"reward component names must be unique; repeated: {', '.join(duplicates)} (set `name:`)"
            )
        self.components = list(components)
        if normalize:
            for component in self.components:
                component.normalize = True
        self.__name__ = name
        self.last_raw: dict[str, list[float]] = {}
        self.last_components: dict[str, list[float]] = {}

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        n = len(completions)
        total = [0.0] * n
        self.last_raw, self.last_components = {}, {}
        for c in self.components:
            raw = check_rewards(c.fn(prompts, completions, **kwargs), n, c.source or c.name)
            values = [TRANSFORMS[c.transform](v) for v in raw]
            if c.normalize:
                c.stats.update(values)
                values = c.stats.normalize(values)
            self.last_raw[c.name], self.last_components[c.name] = raw, values
            total = [t + c.weight * v for t, v in zip(total, values, strict=True)]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and n:
            for name, values in self.last_components.items():
                log_metric(f"reward/{name}", sum(values) / n)
        return total

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (components, weights, transforms, backends) for manifests."""
        return {
            "name": self.__name__,
            "components": [
                {
                    "name": c.name,
                    "source": c.source,
                    "weight": c.weight,
                    "transform": c.transform,
                    "normalize": c.normalize,
                    **({"info": c.fn.info} if isinstance(getattr(c.fn, "info", None), dict) else {}),
                }
                for c in self.components
            ],
        }
