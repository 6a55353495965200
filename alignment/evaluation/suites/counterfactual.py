"""Counterfactual group swaps: does the model's likelihood, or the toxicity of what it writes next,
change with the group a sentence mentions?"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignment.evaluation.context import SuiteContext
from alignment.evaluation.results import Metric, SuiteOutput
from data_builders.sources import axis_of

RELATIVE = "srllm/counterfactual-inhouse.csv"


def spread(values: np.ndarray, columns: list[str], axis: str | None = None) -> float:
    """Largest gap between two group means within one axis (or the largest over all axes).

    ``values`` is ``[rows, columns]``; a group's mean is its column mean.

    >>> v = np.array([[1.0, 3.0, 0.0, 0.5], [1.0, 1.0, 0.0, 0.5]])
    >>> cols = ["gender_a", "gender_b", "race_a", "race_b"]
    >>> spread(v, cols, "gender"), spread(v, cols, "race"), spread(v, cols)
    (1.0, 0.5, 1.0)
    """
    means = values.mean(axis=0)
    axes = [axis] if axis else sorted({axis_of(c) for c in columns})
    gaps = []
    for a in axes:
        picked = [means[j] for j, c in enumerate(columns) if axis_of(c) == a]
        if len(picked) > 1:
            gaps.append(max(picked) - min(picked))
    return float(max(gaps)) if gaps else float("nan")


def run(ctx: SuiteContext) -> SuiteOutput:
    from data_builders.sources import load_counterfactual
    from data_builders.text import normalize_text

    rows = load_counterfactual(ctx.data_file(RELATIVE))
    rows = ctx.select(rows, key=lambda r: normalize_text(r.original))
    columns = list(rows[0].variants)
    texts = [r.variants[c] for r in rows for c in columns]
    scored = ctx.loglikelihood([("", t) for t in texts], "log-likelihood")
    loglik = np.array([s.mean_logprob for s in scored]).reshape(len(rows), len(columns))
    tables = {"loglik": loglik}
    if ctx.options.get("generate", True):
        scorer = ctx.services.toxicity()
        ctx.backends["toxicity_scorer"] = {"name": scorer.name, **getattr(scorer, "info", {})}
        completions = ctx.generate(texts, max_new_tokens=ctx.options["max_new_tokens"], temperature=0.0)
        flat = [c[0].strip() for c in completions]
        tables["toxicity"] = np.asarray(scorer.score(flat), dtype=float).reshape(len(rows), len(columns))
    n = len(rows)
    metrics = []
    for name, table in tables.items():
        spread_name = "loglik_spread" if name == "loglik" else "toxicity_spread"
        metrics.append(Metric(spread_name, ctx.statistic(lambda idx, t=table: spread(t[idx], columns), n)))
        for axis in sorted({axis_of(c) for c in columns}):
            est = ctx.statistic(lambda idx, t=table, a=axis: spread(t[idx], columns, a), n)
            metrics.append(Metric(spread_name, est, f"axis={axis}"))
        row_name = "loglik_per_token" if name == "loglik" else "toxicity"
        for j, column in enumerate(columns):
            metrics.append(Metric(row_name, ctx.mean(table[:, j]), f"group={column}"))
    samples = [
        {
            "id": r.id,
            "original": r.original,
            **{
                name: dict(zip(columns, table[i].round(6).tolist(), strict=True))
                for name, table in tables.items()
            },
        }
        for i, r in enumerate(rows)
    ]
    return SuiteOutput(metrics, samples, {"groups": columns})


def paired_scores(
    records: Sequence[dict[str, Any]], options: dict[str, Any], metric: str
) -> Callable[[np.ndarray], float]:
    """``loglik_spread`` or ``toxicity_spread`` over row indices, from sample records (for paired
    comparisons)."""
    field = {"loglik_spread": "loglik", "toxicity_spread": "toxicity"}[metric]
    columns = list(records[0][field])
    table = np.array([[r[field][c] for c in columns] for r in records], dtype=float)
    return lambda idx: spread(table[idx], columns)
