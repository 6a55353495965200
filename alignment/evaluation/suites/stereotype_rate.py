"""Stereotypes in open-ended generation: BOLD prompts, continuations scored by the learned classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignment.evaluation.context import SuiteContext
from alignment.evaluation.results import Metric, SuiteOutput
from alignment.evaluation.suites.toxicity import pool_files


def run(ctx: SuiteContext) -> SuiteOutput:
    from data_builders.sources import load_prompt_pool
    from data_builders.text import normalize_text

    opts = ctx.options
    for relative in pool_files("bold"):
        ctx.data_file(relative)
    prompts = ctx.select(
        load_prompt_pool("bold"),
        key=lambda p: normalize_text(p.text),
        strata=lambda p: p.meta.get("domain", ""),
    )
    classifier = ctx.services.stereotype_classifier()
    summary = classifier.summary() if hasattr(classifier, "summary") else {}
    ctx.backends["stereotype_classifier"] = summary
    completions = ctx.generate([p.text for p in prompts], **ctx.sampling())
    texts = [f"{p.text.rstrip()} {c.strip()}" for p, cs in zip(prompts, completions, strict=True) for c in cs]
    probs = np.asarray(classifier.predict_proba(texts), dtype=float).reshape(
        len(prompts), opts["num_samples"]
    )
    flagged = (probs >= float(opts["threshold"])).astype(float)
    n = len(prompts)

    def pair(rows: list[int], group: str | None) -> list[Metric]:
        f, p = flagged[rows], probs[rows]
        return [
            Metric(
                "stereotype_rate", ctx.statistic(lambda idx: 100.0 * float(f[idx].mean()), len(rows)), group
            ),
            Metric("mean_stereotype_prob", ctx.statistic(lambda idx: float(p[idx].mean()), len(rows)), group),
        ]

    metrics = pair(list(range(n)), None)
    for domain in sorted({p.meta.get("domain", "") for p in prompts}):
        metrics += pair(
            [i for i, p in enumerate(prompts) if p.meta.get("domain", "") == domain], f"domain={domain}"
        )
    samples = [
        {
            "id": normalize_text(p.text),
            "domain": p.meta.get("domain"),
            "group": p.group,
            "prompt": p.text,
            "completions": cs,
            "p_stereotype": [round(float(x), 6) for x in row],
        }
        for p, cs, row in zip(prompts, completions, probs, strict=True)
    ]
    return SuiteOutput(metrics, samples, {"prompts": n})


def paired_scores(
    records: Sequence[dict[str, Any]], options: dict[str, Any], metric: str
) -> Callable[[np.ndarray], float]:
    """``stereotype_rate`` or ``mean_stereotype_prob`` over prompt indices, from sample records (for paired
    comparisons); every prompt has the same number of continuations."""
    probs = np.array([r["p_stereotype"] for r in records], dtype=float)
    per_prompt = {
        "stereotype_rate": 100.0 * (probs >= float(options["threshold"])).mean(axis=1),
        "mean_stereotype_prob": probs.mean(axis=1),
    }[metric]
    return lambda idx: float(per_prompt[idx].mean())
