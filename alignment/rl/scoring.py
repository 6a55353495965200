"""The reward of a model's own completions per prompt, without training: the base model's scores that pick
prompts with headroom, and the held-out reward before and after RL, compared prompt by prompt.

Sampling is seeded per batch from ``seed`` and the batch's position, so two models scored with the same
seed draw their completions with the same random numbers (common random numbers): the paired difference
then reflects the models, not the luck of the draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignment.rl.kl import KLEstimator, kl_per_token
from alignment.rl.prompts import PromptSet
from alignment.rl.rollout import RewardFn, lm_logprobs, sample_and_score


@dataclass
class PromptScores:
    """Scores of ``samples`` completions of each prompt, ``(prompts, samples)`` arrays."""

    scores: np.ndarray
    lengths: np.ndarray  # completion tokens
    kl: np.ndarray | None = None  # summed per-token KL to the reference, when one was given

    def per_prompt(self) -> np.ndarray:
        """The mean score of each prompt's completions."""
        return self.scores.mean(axis=1)


@torch.no_grad()
def score_prompts(
    lm: Any,
    tokenizer: Any,
    data: PromptSet,
    indices: Sequence[int],
    reward_fn: RewardFn,
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: Sequence[int],
    seed: int,
    batch_size: int,
    forward_batch_size: int | None = None,
    device: Any = "cpu",
    reference: Callable[[], AbstractContextManager[Any]] | None = None,
    kl_estimator: KLEstimator = "k1",
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> PromptScores:
    """Sample ``samples`` completions of each prompt in ``indices`` from ``lm`` and score them.

    With ``reference`` (a context manager yielding the reference LM), the summed per-token KL of each
    completion to it is measured too, from teacher-forced log-probs of both models, ``forward_batch_size``
    completions at a time (default: ``batch_size``): sampling gains from large batches on a CPU, while a
    teacher-forced pass holds logits over the whole vocabulary for every completion token.
    """
    chunk = max(forward_batch_size or batch_size, 1)
    rows = [i for i in indices for _ in range(samples)]
    scores: list[float] = []
    lengths: list[float] = []
    kls: list[float] = []
    for batch, start in enumerate(range(0, len(rows), max(batch_size, 1))):
        torch.manual_seed(seed * 1_000_003 + batch)
        prompts, token_ids, columns = data.select(rows[start : start + batch_size])
        with autocast():
            done = sample_and_score(
                lm,
                tokenizer,
                reward_fn,
                prompts,
                token_ids,
                columns,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                eos_token_ids=eos_token_ids,
                device=device,
            )
            scores.extend(done.scores)
            lengths.extend(done.response_mask.sum(1).tolist())
            if reference is not None:
                for at in range(0, len(done.scores), chunk):
                    kls.extend(
                        _sequence_kl(lm, reference, done, slice(at, at + chunk), temperature, kl_estimator)
                    )
    shape = (len(indices), samples)
    return PromptScores(
        np.asarray(scores, dtype=float).reshape(shape),
        np.asarray(lengths, dtype=float).reshape(shape),
        np.asarray(kls, dtype=float).reshape(shape) if reference is not None else None,
    )


def score_as_stage(
    cfg: Any,
    lm: Any,
    tokenizer: Any,
    data: PromptSet,
    indices: Sequence[int],
    reward_fn: RewardFn,
    eos_token_ids: Sequence[int],
    *,
    samples: int,
    seed: int,
    device: Any = None,
    reference: Callable[[], AbstractContextManager[Any]] | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> PromptScores:
    """:func:`score_prompts` sampling as an RL stage samples (its ``max_new_tokens``, ``temperature``,
    ``per_device_eval_batch_size``, ``kl_estimator`` and KL passes of ``per_device_train_batch_size``),
    with ``lm`` in eval mode meanwhile and on its own device unless ``device`` is given."""
    was_training = lm.training
    lm.eval()
    try:
        return score_prompts(
            lm,
            tokenizer,
            data,
            indices,
            reward_fn,
            samples=samples,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_ids=eos_token_ids,
            seed=seed,
            batch_size=max(cfg.per_device_eval_batch_size, 1),
            forward_batch_size=cfg.per_device_train_batch_size,
            device=device if device is not None else next(lm.parameters()).device,
            reference=reference,
            kl_estimator=getattr(cfg, "kl_estimator", "k1"),
            autocast=autocast,
        )
    finally:
        lm.train(was_training)


def heldout_summary(
    reward: Sequence[float], kl_sum: Sequence[float], tokens: Sequence[float], samples: int
) -> dict[str, float]:
    """Mean reward per prompt, KL per completion and per token, completion length, number of prompts,
    from each prompt's mean reward and its completions' summed KL and token count.

    >>> heldout_summary([0.5, 1.0], [2.0, 4.0], [10.0, 20.0], samples=2)["eval_kl_per_token"]
    0.2
    """
    completions = max(len(reward) * samples, 1)
    return {
        "eval_reward": float(np.mean(reward)) if len(reward) else float("nan"),
        "eval_kl": float(np.sum(kl_sum)) / completions,
        "eval_kl_per_token": float(np.sum(kl_sum)) / max(float(np.sum(tokens)), 1.0),
        "eval_response_length": float(np.sum(tokens)) / completions,
        "eval_prompts": len(reward),
    }


def _sequence_kl(
    lm: Any,
    reference: Callable[[], AbstractContextManager[Any]],
    done: Any,
    rows: slice,
    temperature: float,
    estimator: KLEstimator,
) -> list[float]:
    """The summed per-token KL to the reference of the completions ``rows`` of ``done``."""
    mask = done.response_mask[rows]
    args = (done.query_ids[rows], done.query_mask[rows], done.response_ids[rows], mask, temperature)
    logprobs = lm_logprobs(lm, *args)
    with reference() as ref:
        ref_logprobs = lm_logprobs(ref, *args)
    return (kl_per_token(logprobs, ref_logprobs, estimator) * mask).sum(1).float().cpu().tolist()


def paired_change(base: np.ndarray, trained: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Trained minus base mean reward over the same prompts: the paired bootstrap interval and p-value
    (resampling prompts), and the change in units of the base's standard deviation over prompts.

    >>> out = paired_change(np.array([0.1, 0.5, 0.3, 0.7]), np.array([0.3, 0.6, 0.5, 0.8]))
    >>> out["change"], out["base_sd"], out["change_in_base_sd"]
    (0.15, 0.258199, 0.580948)
    """
    from alignment.evaluation.stats import paired_bootstrap

    base, trained = np.asarray(base, dtype=float), np.asarray(trained, dtype=float)
    if base.shape != trained.shape:
        raise ValueError(f"paired rewards differ in length: {base.size} and {trained.size}")
    est = paired_bootstrap(lambda i: base[i].mean(), lambda i: trained[i].mean(), base.size, seed=seed)
    sd = float(base.std(ddof=1)) if base.size > 1 else float("nan")
    in_sd = est.value / sd if sd > 0 else float("nan")
    return {
        "n": est.n,
        "base_mean": round(float(base.mean()), 6),
        "trained_mean": round(float(trained.mean()), 6),
        "change": round(est.value, 6),
        "ci95": [_round(est.low), _round(est.high)],
        "p": _round(est.p),
        "test": est.test,
        "base_sd": round(sd, 6),
        "change_in_base_sd": _round(in_sd),
    }


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)
