"""Perplexity on neutral held-out text (HellaSwag validation contexts with their correct endings)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignment.evaluation.context import SuiteContext
from alignment.evaluation.results import Metric, SuiteOutput
from alignment.evaluation.suites.hellaswag import RELATIVE, load_hellaswag


def neutral_texts(ctx: SuiteContext) -> list[tuple[str, str]]:
    """``(id, text)`` of the neutral texts, subsampled with a key of their own (not the HellaSwag suite's)."""
    items = load_hellaswag(ctx.data_file(RELATIVE))
    items = ctx.select(items, key=lambda it: f"neutral-{it.id}")
    return [(it.id, it.gold_text) for it in items]


def run(ctx: SuiteContext) -> SuiteOutput:
    texts = neutral_texts(ctx)
    scored = ctx.loglikelihood([("", text) for _, text in texts])
    nll = np.array([-s.logprob for s in scored])
    tokens = np.array([s.n_tokens for s in scored], dtype=float)
    ppl = ctx.statistic(lambda idx: math.exp(nll[idx].sum() / tokens[idx].sum()), len(texts))
    per_token = ctx.statistic(lambda idx: float(nll[idx].sum() / tokens[idx].sum()), len(texts))
    samples = [
        {"id": i, "tokens": int(t), "nll": float(n)} for (i, _), t, n in zip(texts, tokens, nll, strict=True)
    ]
    return SuiteOutput(
        [Metric("perplexity", ppl), Metric("nll_per_token", per_token)],
        samples,
        {"tokens": int(tokens.sum()), **ctx.engine.prefix_info()},
    )


def paired_scores(
    records: Sequence[dict[str, Any]], options: dict[str, Any], metric: str
) -> Callable[[np.ndarray], float]:
    """``perplexity`` or ``nll_per_token`` over text indices, from sample records (for paired comparisons)."""
    nll = np.array([r["nll"] for r in records], dtype=float)
    tokens = np.array([r["tokens"] for r in records], dtype=float)
    if metric == "perplexity":
        return lambda idx: math.exp(nll[idx].sum() / tokens[idx].sum())
    return lambda idx: float(nll[idx].sum() / tokens[idx].sum())
