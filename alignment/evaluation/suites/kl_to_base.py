"""Mean per-token KL(model || base) on neutral held-out text, teacher-forced, over the full vocabulary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from alignment.errors import SafealignError
from alignment.evaluation.context import SuiteContext
from alignment.evaluation.engine import LoglikEngine
from alignment.evaluation.results import Metric, SuiteOutput
from alignment.evaluation.suites.perplexity import neutral_texts


def token_kl(model_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, from logits of p (model) and q (base) over the same vocabulary.

    >>> token_kl(torch.zeros(1, 3), torch.zeros(1, 3)).tolist()
    [0.0]
    """
    logp = torch.log_softmax(model_logits.float(), dim=-1)
    logq = torch.log_softmax(base_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def run(ctx: SuiteContext) -> SuiteOutput:
    base_model, base_tokenizer = ctx.services.base_model()
    engine = ctx.engine
    base_engine = LoglikEngine(
        base_model,
        base_tokenizer,
        batch_size=engine.batch_size,
        max_batch_tokens=engine.max_batch_tokens,
        padding_side=engine.padding_side,
    )
    texts = neutral_texts(ctx)
    requests = [("", text) for _, text in texts]
    items = engine.encode(requests)
    if base_engine.encode(requests) != items:
        raise SafealignError(
            f"kl_to_base: the base model {ctx.services.base_spec!r} tokenizes the texts differently; "
            "KL needs the same tokenizer (use the model this one was trained from)"
        )
    if base_model.config.vocab_size != engine.model.config.vocab_size:
        raise SafealignError("kl_to_base: model and base model have different vocabulary sizes")
    kl_sum = np.zeros(len(items))
    tokens = np.array([len(cont) for _, cont in items], dtype=float)
    progress = ctx.tracker("KL to base", len(items))
    with torch.inference_mode():
        for (chosen, logits, _), (base_chosen, base_logits, _) in zip(
            engine.continuation_logits(items), base_engine.continuation_logits(items), strict=True
        ):
            assert chosen == base_chosen
            per_token = token_kl(logits, base_logits.to(logits.device)).cpu().numpy()
            pos = 0
            for i in chosen:
                n = len(items[i][1])
                kl_sum[i] = per_token[pos : pos + n].sum()
                pos += n
            if progress:
                progress(len(chosen))
    estimate = ctx.statistic(lambda idx: float(kl_sum[idx].sum() / tokens[idx].sum()), len(items))
    samples = [
        {"id": i, "tokens": int(t), "kl_sum": float(k)}
        for (i, _), t, k in zip(texts, tokens, kl_sum, strict=True)
    ]
    return SuiteOutput([Metric("kl", estimate)], samples, {"base_model": ctx.services.base_spec})


def paired_scores(
    records: Sequence[dict[str, Any]], options: dict[str, Any], metric: str
) -> Callable[[np.ndarray], float]:
    """``kl`` over text indices, from sample records. The base model's own records are all zero (KL to
    itself), so a paired comparison gives the stage's KL with its bootstrap interval."""
    kl_sum = np.array([r["kl_sum"] for r in records], dtype=float)
    tokens = np.array([r["tokens"] for r in records], dtype=float)
    return lambda idx: float(kl_sum[idx].sum() / tokens[idx].sum())
