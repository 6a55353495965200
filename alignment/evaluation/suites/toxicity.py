"""Toxicity of sampled continuations of RealToxicityPrompts and ToxiGen prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignment.errors import SafealignError
from alignment.evaluation.context import SuiteContext
from alignment.evaluation.results import Metric, SuiteOutput


def pool_files(source: str) -> list[str]:
    """The data files a prompt pool reads (relative to the data dir), for the results' hashes."""
    from data_builders.sources import known_files
    from data_builders.sources.prompt_pools import BOLD_DIR, RTP_RELATIVE, TOXIGEN_DIR

    if source == "rtp":
        return [RTP_RELATIVE]
    folder = {"toxigen": TOXIGEN_DIR, "bold": BOLD_DIR}[source]
    return sorted(rel for rel in known_files() if rel.startswith(folder + "/"))


def toxicity_metrics(
    ctx: SuiteContext, scores: np.ndarray, threshold: float, group: str | None
) -> list[Metric]:
    """The four toxicity metrics for a ``[prompts, samples]`` score matrix (CIs resample prompts)."""
    n = scores.shape[0]
    over = scores >= threshold
    return [
        Metric("expected_max_toxicity", ctx.mean(scores.max(axis=1)), group),
        Metric("toxicity_probability", ctx.mean(over.any(axis=1).astype(float), 100), group),
        Metric("mean_toxicity", ctx.statistic(lambda idx: float(scores[idx].mean()), n), group),
        Metric("toxic_rate", ctx.statistic(lambda idx: 100.0 * float(over[idx].mean()), n), group),
    ]


def run(ctx: SuiteContext) -> SuiteOutput:
    from data_builders.sources import load_prompt_pool
    from data_builders.text import normalize_text

    opts = ctx.options
    unknown = set(opts["sources"]) - {"rtp", "toxigen"}
    if unknown:
        raise SafealignError(f"toxicity: unknown prompt sources {sorted(unknown)}; use rtp and/or toxigen")
    prompts = []
    available = 0
    for source in opts["sources"]:
        for relative in pool_files(source):
            ctx.data_file(relative)
        pool = load_prompt_pool(source)
        picked = ctx.select(
            pool, key=lambda p: normalize_text(p.text), strata=lambda p: f"{p.meta.get('kind', '')}/{p.group}"
        )
        available += ctx.n_available or 0
        prompts.extend(picked)
    ctx.n_available = available
    scorer = ctx.services.toxicity()
    ctx.backends["toxicity_scorer"] = {"name": scorer.name, **getattr(scorer, "info", {})}
    completions = ctx.generate([p.text for p in prompts], **ctx.sampling())
    # A ToxiGen prompt is a list of "- statement" lines: its continuation is the next line only.
    completions = [
        [c.split("\n")[0] if p.source == "toxigen" else c for c in texts]
        for p, texts in zip(prompts, completions, strict=True)
    ]
    flat = [c.strip() for texts in completions for c in texts]
    scores = np.asarray(scorer.score(flat), dtype=float).reshape(len(prompts), opts["num_samples"])
    threshold = float(opts["threshold"])
    metrics = toxicity_metrics(ctx, scores, threshold, None)
    for source in opts["sources"]:
        rows = [i for i, p in enumerate(prompts) if p.source == source]
        metrics += toxicity_metrics(ctx, scores[rows], threshold, f"source={source}")
    for kind in sorted({p.meta.get("kind") for p in prompts if p.source == "toxigen"}):
        rows = [i for i, p in enumerate(prompts) if p.source == "toxigen" and p.meta.get("kind") == kind]
        metrics += toxicity_metrics(ctx, scores[rows], threshold, f"source=toxigen/kind={kind}")
    samples = [
        {
            "id": f"{p.source}:{normalize_text(p.text)}",
            "source": p.source,
            "group": p.group,
            "prompt": p.text,
            "completions": texts,
            "toxicity": [round(float(s), 6) for s in row],
        }
        for p, texts, row in zip(prompts, completions, scores, strict=True)
    ]
    return SuiteOutput(metrics, samples, {"prompts": len(prompts)})


def paired_scores(
    records: Sequence[dict[str, Any]], options: dict[str, Any], metric: str
) -> Callable[[np.ndarray], float]:
    """One of the four toxicity metrics over prompt indices, from sample records (for paired comparisons);
    every prompt has the same number of continuations, so each metric is a mean of per-prompt values."""
    scores = np.array([r["toxicity"] for r in records], dtype=float)
    over = scores >= float(options["threshold"])
    per_prompt = {
        "expected_max_toxicity": scores.max(axis=1),
        "toxicity_probability": 100.0 * over.any(axis=1),
        "mean_toxicity": scores.mean(axis=1),
        "toxic_rate": 100.0 * over.mean(axis=1),
    }[metric]
    return lambda idx: float(per_prompt[idx].mean())
