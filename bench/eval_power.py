"""How many items a paired comparison needs: ``python -m bench.eval_power BASE_EVAL STAGE_EVAL``.

For every headline metric of the two evaluations (``safealign eval`` output folders; items scored by
both are compared, so one may use a larger limit, which picks a superset) this measures how the items
moved between the models and the sample size that detects a change of ``--delta`` points with a
two-sided 5% test and 80% power:

* a proportion of 0/1 outcomes (McNemar): with discordance rate ``pd`` (share of items whose outcome
  differs between the models) and a change ``d`` (as a fraction), Connor's (1987) approximation
  ``n = (z_{a/2} sqrt(pd) + z_b sqrt(pd - d^2))^2 / d^2``, raised until the exact test's power (computed,
  not approximated) reaches 80%;
* a mean of per-item values (e.g. TruthfulQA MC2): with ``s`` the standard deviation of the per-item
  differences (in points), ``n = ((z_{a/2} + z_b) s / delta)^2``.

The discordance rate grows with how far training moves the model, so measure it between the base model
and a trained stage. Prints a table and, with ``--out``, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom, norm

from alignment.evaluation.paired import Unpaired, field_values, load_samples, match_items
from alignment.evaluation.registry import load_suites
from alignment.io import atomic_write_json
from bench.record import cli_main


def mcnemar_power(n: int, discordance: float, delta: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test on ``n`` items whose outcomes differ between the
    models with probability ``discordance``, ``delta`` more often in one direction than the other.

    The number of discordant items is Binomial(n, discordance); given it, the test rejects when the
    smaller direction's count is in the lower ``alpha/2`` tail of Binomial(D, 1/2).
    """
    d = np.arange(n + 1)
    weight = binom.pmf(d, n, discordance)
    keep = weight > 1e-12
    d, weight = d[keep], weight[keep]
    k = binom.ppf(alpha / 2, d, 0.5)
    k = np.where(binom.cdf(k, d, 0.5) < alpha / 2, k, k - 1)  # largest count rejected in each tail
    q = (discordance + delta) / (2 * discordance)  # share of the discordant items in the up direction
    reject = binom.cdf(k, d, q) + binom.sf(d - k - 1, d, q)
    return float((weight * np.where(k >= 0, reject, 0.0)).sum())


def mcnemar_n(discordance: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items needed to detect a change ``delta`` (a fraction) in a paired proportion with the exact
    McNemar test: Connor's (1987) normal approximation, then the smallest size at or above it whose
    exact power (:func:`mcnemar_power`) reaches ``power`` (the exact test is conservative).

    >>> mcnemar_n(0.10, 0.05)
    340
    """
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = math.ceil((za * math.sqrt(discordance) + zb * math.sqrt(discordance - delta**2)) ** 2 / delta**2)
    while mcnemar_power(n, discordance, delta, alpha) < power:
        n = math.ceil(n * 1.01)
    return n


def mean_n(sd_diff: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items needed to detect a change ``delta`` in a mean of paired differences with this spread.

    >>> mean_n(10.0, 1.5)
    349
    """
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil(((za + zb) * sd_diff / delta) ** 2)


def metric_power(
    base: list[dict[str, Any]], stage: list[dict[str, Any]], form: Any, delta_points: float
) -> dict[str, Any] | None:
    """Discordance (or spread of differences) and the items needed, for one metric; None if not per-item."""
    field = form.outcome or form.mean
    if field is None:
        return None
    try:
        common = {str(r[form.key]) for r in base} & {str(r[form.key]) for r in stage}
        base = [r for r in base if str(r[form.key]) in common]  # a larger limit picks a superset
        stage = [r for r in stage if str(r[form.key]) in common]
        base, stage = match_items(base, stage, form.key)
        a, b = field_values(base, field), field_values(stage, field)
    except Unpaired:
        return None
    scale, n = form.scale, len(a)
    if form.outcome:
        flips_down, flips_up = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        discordance = (flips_down + flips_up) / n
        change = delta_points / scale
        # fewer discordant items than the change itself: these two models never differ by that much
        needed = mcnemar_n(discordance, change) if discordance > change else None
        return {
            "test": "McNemar",
            "n": n,
            "flips_down": flips_down,
            "flips_up": flips_up,
            "discordance": round(discordance, 4),
            "needed_n": needed,
        }
    diffs = scale * (b - a)
    sd = float(np.std(diffs, ddof=1)) if n > 1 else 0.0
    return {"test": "paired mean", "n": n, "sd_diff": round(sd, 3), "needed_n": mean_n(sd, delta_points)}


def power_table(base_dir: Path, stage_dir: Path, delta_points: float) -> dict[str, Any]:
    """Per suite and metric: how items moved and how many are needed (see the module docstring)."""
    base, stage = load_samples(base_dir), load_samples(stage_dir)
    rows = {}
    for name, spec in load_suites().items():
        if name not in base or name not in stage:
            continue
        for metric, info in spec.metrics.items():
            if info.paired is not None:
                row = metric_power(base[name], stage[name], info.paired, delta_points)
                if row is not None:
                    rows[f"{name}/{metric}"] = row
    return {"base": str(base_dir), "stage": str(stage_dir), "delta_points": delta_points, "metrics": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_power", description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path, help="evaluation folder of the base model")
    parser.add_argument("stage", type=Path, help="evaluation folder of a trained model, same items")
    parser.add_argument("--delta", type=float, default=1.5, help="change to detect, in points")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    table = power_table(args.base, args.stage, args.delta)
    for metric, row in table["metrics"].items():
        moved = (
            f"discordance {row['discordance']:.3f} ({row['flips_down']} down, {row['flips_up']} up)"
            if row["test"] == "McNemar"
            else f"sd of differences {row['sd_diff']:.2f} points"
        )
        needed = row["needed_n"] if row["needed_n"] is not None else "- (fewer flips than the change)"
        print(f"{metric:36s} n={row['n']:5d}  {moved:40s} needed for {args.delta} points: {needed}")
    if args.out:
        atomic_write_json(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "eval_power"))
