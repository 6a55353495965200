"""Stage-versus-base comparison: deltas with confidence, bias/retention tallies and plain-word verdicts.

Every metric row carries a *goal*: ``"max"`` (higher is better), ``"min"`` (lower is better) or a number
(the ideal value, e.g. 50 for CrowS-Pairs ``pct_stereotype``). A bias measure counts as improved when the
stage is closer to the goal than the base; a retention measure counts as a capability loss when it moves
away from its goal by more than its tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Goal = float | Literal["max", "min"]
Z95 = 1.959964


@dataclass(frozen=True)
class Cell:
    """One metric of one stage: value, 95% CI and sample size."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None

    @property
    def stderr(self) -> float | None:
        """Standard error implied by the 95% CI (normal approximation)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / (2 * Z95)


@dataclass
class MetricRow:
    """One metric across stages."""

    suite: str
    metric: str
    kind: Literal["bias", "retention"]
    goal: Goal
    cells: dict[str, Cell] = field(default_factory=dict)  # stage name -> cell
    tolerance: float | None = None  # retention: largest acceptable move away from the goal
    capability: bool = False  # part of the capability check (a model that forgets looks unbiased)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.metric}"


@dataclass(frozen=True)
class Delta:
    """Stage minus base, with a normal-approximation 95% CI from the two CIs."""

    value: float
    ci_low: float | None
    ci_high: float | None
    improvement: float  # > 0 when the stage is closer to the goal than the base

    @property
    def significant(self) -> bool:
        """True when the delta's CI excludes zero."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)


def goal_of(better: str, ideal: float | None) -> Goal:
    """The goal implied by a results row's ``better`` (higher/lower/closer) and ``ideal``.

    >>> goal_of("closer", 50), goal_of("higher", 100), goal_of("lower", 0)
    (50.0, 'max', 'min')
    """
    if better == "closer":
        return float(ideal if ideal is not None else 0.0)
    return "max" if better == "higher" else "min"


def distance_to_goal(value: float, goal: Goal) -> float:
    """How far ``value`` is from the goal; smaller is better.

    >>> distance_to_goal(62.0, 50.0), distance_to_goal(0.3, "min"), distance_to_goal(0.7, "max")
    (12.0, 0.3, -0.7)
    """
    if goal == "max":
        return -value
    if goal == "min":
        return value
    return abs(value - float(goal))


def delta(stage: Cell, base: Cell, goal: Goal) -> Delta:
    """Compare ``stage`` with ``base``.

    The CI treats the two estimates as independent (conservative when they share items), so a delta
    marked significant is a real change.

    >>> d = delta(Cell(55.0, 53.0, 57.0), Cell(60.0, 58.0, 62.0), 50.0)
    >>> round(d.value, 2), d.significant, d.improvement
    (-5.0, True, 5.0)
    """
    diff = stage.value - base.value
    improvement = distance_to_goal(base.value, goal) - distance_to_goal(stage.value, goal)
    if stage.stderr is None or base.stderr is None:
        return Delta(diff, None, None, improvement)
    half = Z95 * math.hypot(stage.stderr, base.stderr)
    return Delta(diff, diff - half, diff + half, improvement)


@dataclass
class Verdict:
    """What a stage did, in numbers and in words."""

    stage: str
    bias_improved: int
    bias_significant: int
    bias_worse_significant: int
    bias_total: int
    capability_losses: list[str]
    text: str


def _noise(d: Delta) -> str:
    """``; 95% CI of the change [lo, hi], not significant`` (or ``significant``) when the CI is known."""
    if d.ci_low is None:
        return ""
    return f"; 95% CI of the change [{d.ci_low:.3g}, {d.ci_high:.3g}], " + (
        "significant" if d.significant else "not significant"
    )


def verdict(stage: str, rows: list[MetricRow], base: str = "base") -> Verdict:
    """Tally bias measures that moved toward their goal, and retention measures beyond tolerance."""
    improved = significant = worse = total = 0
    losses: list[str] = []
    for row in rows:
        if stage not in row.cells or base not in row.cells:
            continue
        d = delta(row.cells[stage], row.cells[base], row.goal)
        if row.kind == "bias":
            total += 1
            improved += d.improvement > 0
            significant += d.improvement > 0 and d.significant
            worse += d.improvement < 0 and d.significant
        elif row.capability and row.tolerance is not None and -d.improvement > row.tolerance:
            losses.append(f"{row.key} {d.value:+.3g} (tolerance {row.tolerance:g}{_noise(d)})")
    words = f"bias down on {improved} of {total} measures ({significant} significant"
    words += f", {worse} significantly worse)" if worse else ")"
    if losses:
        words += "; CAPABILITY LOSS beyond tolerance: " + ", ".join(losses)
        if improved:
            words += " (the bias gains may only reflect forgetting)"
    else:
        words += "; retention within tolerance"
    return Verdict(stage, improved, significant, worse, total, losses, words)
