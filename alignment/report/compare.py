"""Stage-versus-base comparison: deltas with confidence, bias/retention tallies and plain-word verdicts.

Every metric row carries a *goal*: ``"max"`` (higher is better), ``"min"`` (lower is better) or a number
(the ideal value, e.g. 50 for CrowS-Pairs ``pct_stereotype``). A bias measure counts as improved when the
stage is closer to the goal than the base; a retention measure counts as a capability loss when it moves
away from its goal by more than its tolerance.

A change is *significant* when its p-value, adjusted with Holm's method across the stage's bias measures
(retention measures form a second family), is below 5%. The p-value comes from a paired test on the
items both models were scored on (:mod:`alignment.evaluation.paired`); only when there are no usable
per-item samples does it come from the two independent intervals, and the delta says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from alignment.evaluation.stats import PairedEstimate, holm

Goal = float | Literal["max", "min"]
Z95 = 1.959964
ALPHA = 0.05
INDEPENDENT = "independent CIs"


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
    deltas: dict[str, Delta] = field(default_factory=dict)  # stage name -> change from base
    tolerance: float | None = None  # retention: largest acceptable move away from the goal
    capability: bool = False  # part of the capability check (a model that forgets looks unbiased)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.metric}"


@dataclass(frozen=True)
class Delta:
    """Stage minus base: the change, its 95% CI, raw and Holm-adjusted p-values and the test behind them."""

    value: float
    ci_low: float | None
    ci_high: float | None
    improvement: float  # > 0 when the stage is closer to the goal than the base
    p: float | None = None
    p_holm: float | None = None  # adjusted within the stage's family (bias or retention measures)
    method: str = INDEPENDENT
    n: int | None = None  # paired items
    discordant: tuple[int, int] | None = None  # McNemar: items 1 -> 0 and 0 -> 1
    note: str = ""  # why the change is not paired

    @property
    def significant(self) -> bool:
        """The Holm-adjusted p-value (the raw one before adjustment) is below 5%."""
        p = self.p_holm if self.p_holm is not None else self.p
        return p is not None and p < ALPHA

    @property
    def test(self) -> str:
        """The method, with the reason when the change could not be paired."""
        return f"{self.method} ({self.note})" if self.note else self.method


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


def independent_delta(stage: Cell, base: Cell, goal: Goal) -> Delta:
    """Compare ``stage`` with ``base`` from their intervals alone (for results without per-item samples).

    The CI and the normal-approximation p-value treat the two estimates as independent, which is
    conservative when they share items.

    >>> d = independent_delta(Cell(55.0, 53.0, 57.0), Cell(60.0, 58.0, 62.0), 50.0)
    >>> round(d.value, 2), d.significant, d.improvement, d.method
    (-5.0, True, 5.0, 'independent CIs')
    """
    diff = stage.value - base.value
    improvement = distance_to_goal(base.value, goal) - distance_to_goal(stage.value, goal)
    if stage.stderr is None or base.stderr is None:
        return Delta(diff, None, None, improvement)
    se = math.hypot(stage.stderr, base.stderr)
    p = math.erfc(abs(diff) / se / math.sqrt(2.0)) if se > 0 else float(diff == 0)
    return Delta(diff, diff - Z95 * se, diff + Z95 * se, improvement, p=p)


def paired_delta(estimate: PairedEstimate, stage: Cell, base: Cell, goal: Goal) -> Delta:
    """A delta from a paired comparison of the two evaluations' items."""
    improvement = distance_to_goal(base.value, goal) - distance_to_goal(stage.value, goal)
    return Delta(
        estimate.value,
        estimate.low,
        estimate.high,
        improvement,
        p=estimate.p,
        method=estimate.test,
        n=estimate.n,
        discordant=estimate.discordant,
    )


def adjust(rows: list[MetricRow], stage: str) -> None:
    """Holm-adjust the stage's p-values, bias measures and retention measures as two families."""
    for kind in ("bias", "retention"):
        family = [
            r
            for r in rows
            if r.kind == kind
            and stage in r.deltas
            and r.deltas[stage].p is not None
            and math.isfinite(r.deltas[stage].p)
        ]
        for row, p in zip(family, holm([r.deltas[stage].p for r in family]), strict=True):
            row.deltas[stage] = replace(row.deltas[stage], p_holm=p)


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
    """Tally bias measures that moved toward their goal (significant: Holm-adjusted p below 5%), and
    retention measures beyond tolerance."""
    improved = significant = worse = total = unpaired = 0
    losses: list[str] = []
    for row in rows:
        d = row.deltas.get(stage)
        if d is None or base not in row.cells:
            continue
        if row.kind == "bias":
            total += 1
            unpaired += d.method == INDEPENDENT
            improved += d.improvement > 0
            significant += d.improvement > 0 and d.significant
            worse += d.improvement < 0 and d.significant
        elif row.capability and row.tolerance is not None and -d.improvement > row.tolerance:
            losses.append(f"{row.key} {d.value:+.3g} (tolerance {row.tolerance:g}{_noise(d)})")
    words = f"bias down on {improved} of {total} measures ({significant} significant after Holm"
    words += f", {worse} significantly worse)" if worse else ")"
    if unpaired:
        words += f"; {unpaired} of the {total} compared without pairing (independent CIs)"
    if losses:
        words += "; CAPABILITY LOSS beyond tolerance: " + ", ".join(losses)
        if improved:
            words += " (the bias gains may only reflect forgetting)"
    else:
        words += "; retention within tolerance"
    return Verdict(stage, improved, significant, worse, total, losses, words)
