"""Held-out metrics of the stereotype classifier: accuracy, macro-F1, ROC-AUC, calibration, pairs.

Three-way metrics (accuracy, macro-F1 over the labels present) use the examples with an exact label;
the binary metrics (stereotype vs not: accuracy, ROC-AUC and expected calibration error of
P(stereotype)) use every example; ``pair_accuracy`` is the share of StereoSet items and CrowS pairs
whose stereotype sentence gets a higher P(stereotype) than its anti-stereotype sentence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from reward.stereotype.data import LABELS, Example


def expected_calibration_error(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> float:
    """ECE of binary probabilities: bin-size-weighted |mean prediction - observed rate| over equal-width bins.

    >>> expected_calibration_error([0.9, 0.9, 0.1, 0.1], [True, False, False, False])
    0.25
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    if p.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() / p.size * abs(p[members].mean() - y[members].mean())
    return round(float(total), 6)


def f1_per_label(gold: Sequence[int], pred: Sequence[int], labels: Sequence[int]) -> list[float]:
    """F1 of each label in ``labels`` (0 when a label is never predicted nor present).

    >>> f1_per_label([0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2])
    [0.6666666666666666, 0.6666666666666666, 1.0]
    """
    g, p = np.asarray(gold), np.asarray(pred)
    scores = []
    for k in labels:
        tp = float(np.sum((g == k) & (p == k)))
        denominator = float(np.sum(g == k) + np.sum(p == k))
        scores.append(2 * tp / denominator if denominator else 0.0)
    return scores


def _three_way(examples: Sequence[Example], probs: np.ndarray) -> dict[str, Any]:
    exact = [i for i, e in enumerate(examples) if e.label is not None]
    if not exact:
        return {}
    gold = [LABELS.index(examples[i].label) for i in exact]
    pred = probs[exact].argmax(axis=1).tolist()
    present = sorted(set(gold))
    if len(present) < 2:  # one gold label only (e.g. the biased side of rewrites): no class comparison
        return {"n_exact": len(exact)}
    per_label = f1_per_label(gold, pred, present)
    return {
        "n_exact": len(exact),
        "accuracy": round(float(np.mean(np.array(gold) == np.array(pred))), 4),
        "macro_f1": round(float(np.mean(per_label)), 4),
        "f1_per_label": {LABELS[k]: round(float(v), 4) for k, v in zip(present, per_label, strict=True)},
    }


def _binary(examples: Sequence[Example], probs: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    y = np.array([e.is_stereotype for e in examples])
    p = probs[:, LABELS.index("stereotype")]
    out: dict[str, Any] = {
        "binary_accuracy": round(float(np.mean((probs.argmax(axis=1) == 0) == y)), 4),
        "ece": expected_calibration_error(p, y),
    }
    if 0 < y.sum() < len(y):
        out["roc_auc"] = round(float(roc_auc_score(y, p)), 4)
    return out


def _pairs(examples: Sequence[Example], probs: np.ndarray) -> dict[str, Any]:
    by_pair: dict[str, dict[str, float]] = defaultdict(dict)
    for e, row in zip(examples, probs, strict=True):
        if e.label in ("stereotype", "anti-stereotype") and e.source in ("stereoset", "crows_pairs"):
            by_pair[e.pair][e.label] = float(row[0])
    wins = [p["stereotype"] > p["anti-stereotype"] for p in by_pair.values() if len(p) == 2]
    return {"pairs": len(wins), "pair_accuracy": round(float(np.mean(wins)), 4)} if wins else {}


def summarize(examples: Sequence[Example], probs: np.ndarray) -> dict[str, Any]:
    """All metrics for one set of examples and their predicted label probabilities ``(n, 3)``."""
    if not examples:
        return {"n": 0}
    return {
        "n": len(examples),
        **_three_way(examples, probs),
        **_binary(examples, probs),
        **_pairs(examples, probs),
    }


def bootstrap_macro_f1(
    examples: Sequence[Example], probs: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """95% interval of three-way macro-F1, resampling whole groups (targets, pairs) with replacement."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        if e.label is not None:
            groups[e.group].append(i)
    keys = sorted(groups)
    if len(keys) < 2:
        return {}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = rng.choice(len(keys), size=len(keys), replace=True)
        index = [i for k in chosen for i in groups[keys[k]]]
        values.append(_three_way([examples[i] for i in index], probs[index]).get("macro_f1", np.nan))
    if np.isnan(values).any():
        return {}
    low, high = np.percentile(values, [2.5, 97.5])
    return {
        "low": round(float(low), 4),
        "high": round(float(high), 4),
        "resamples": resamples,
        "unit": "group",
    }


def report(examples: Sequence[Example], probs: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Metrics overall, per source (with a grouped bootstrap CI of macro-F1) and per source x bias type."""
    probs = np.asarray(probs, dtype=float)
    out: dict[str, Any] = {"overall": summarize(examples, probs), "by_source": {}, "by_bias_type": {}}
    for source in sorted({e.source for e in examples}):
        index = [i for i, e in enumerate(examples) if e.source == source]
        subset = [examples[i] for i in index]
        out["by_source"][source] = summarize(subset, probs[index])
        ci = bootstrap_macro_f1(subset, probs[index], seed=seed)
        if ci:
            out["by_source"][source]["macro_f1_ci95"] = ci
        for bias in sorted({e.bias_type for e in subset}):
            sub = [i for i in index if examples[i].bias_type == bias]
            out["by_bias_type"][f"{source}/{bias}"] = summarize([examples[i] for i in sub], probs[sub])
    return out
