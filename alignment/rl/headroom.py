"""Prompts with headroom: keep the training prompts on which the starting model's own completions score
worst under the stage's reward, so RL spends its rollouts where the reward can still rise.

The base model samples ``headroom_samples`` completions per prompt; the prompts whose mean score is in the
lowest ``headroom_quantile`` are kept. The scores are cached in a JSON file keyed by everything that
determines them (model, reward, sampling settings, seed), so a resumed or repeated run reuses them.

Held-out prompts are never selected on the samples they are evaluated with: picking the worst prompts
from one draw and re-scoring the same draw would show a gain from regression to the mean alone.
With ``headroom_heldout`` the held-out prompts are selected on an independent draw (another seed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignment.errors import SafealignError
from alignment.io import atomic_write_json
from alignment.rl.prompts import PromptSet

CACHE_VERSION = 1
HELDOUT_SEED_OFFSET = 104_729  # the held-out selection draw never reuses the evaluation's seed


@dataclass
class HeadroomConfig:
    """The headroom and held-out sampling keys every RL stage (PPO, GRPO, RLOO) takes."""

    headroom_quantile: float | None = field(
        default=None,
        metadata={
            "help": "train only on prompts whose base-model reward is in this lowest quantile "
            "(e.g. 0.25); unset: every prompt"
        },
    )
    headroom_samples: int = field(
        default=2, metadata={"help": "completions per prompt the base model samples to score a prompt"}
    )
    headroom_pool: int | None = field(
        default=None,
        metadata={"help": "score at most this many training prompts (a seeded subset); unset: all"},
    )
    headroom_heldout: bool = field(
        default=False,
        metadata={
            "help": "select the held-out prompts the same way, on an independent draw of base completions"
        },
    )
    headroom_seed: int = field(
        default=0,
        metadata={
            "help": "seed of the base samples and the pool subset that choose the prompts (apart from "
            "`seed`, so runs with other training seeds train and evaluate on the same prompts)"
        },
    )
    headroom_cache: str | None = field(
        default=None,
        metadata={"help": "JSON file caching the base scores (default: headroom.json in the run directory)"},
    )

    eval_samples: int = field(
        default=1,
        metadata={
            "help": "completions sampled per held-out prompt (the same seed at every evaluation, so base and "
            "trained policy are compared prompt by prompt)"
        },
    )

    def check_headroom(self) -> None:
        if self.eval_samples < 1:
            raise ValueError(f"eval_samples must be at least 1, got {self.eval_samples}")
        q = self.headroom_quantile
        if q is not None and not 0 < q <= 1:
            raise ValueError(f"headroom_quantile must be in (0, 1] or unset, got {q}")
        if self.headroom_samples < 1:
            raise ValueError(f"headroom_samples must be at least 1, got {self.headroom_samples}")
        if self.headroom_pool is not None and self.headroom_pool < 1:
            raise ValueError(f"headroom_pool must be at least 1 or unset, got {self.headroom_pool}")
        if self.headroom_heldout and q is None:
            raise ValueError("headroom_heldout needs headroom_quantile")


def lowest_quantile(scores: Sequence[float], quantile: float) -> list[int]:
    """Indices of the ``ceil(quantile * n)`` lowest scores (at least one), in their original order; ties
    are broken by position.

    >>> lowest_quantile([0.9, 0.1, 0.5, 0.1], 0.5)
    [1, 3]
    """
    n = len(scores)
    keep = max(1, math.ceil(quantile * n - 1e-9))
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    return sorted(int(i) for i in order[:keep])


def prompt_key(token_ids: Sequence[int]) -> str:
    """A stable key for a rendered prompt: the hash of its token ids."""
    return hashlib.sha1(json.dumps(list(token_ids)).encode()).hexdigest()[:20]


class ScoreCache:
    """Per-prompt base scores in a JSON file, valid only for the ``identity`` they were computed under."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path, self.identity = path, identity
        self.scores: dict[str, list[float]] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SafealignError(f"{path}: not a headroom score cache ({exc}); delete it") from exc
            if data.get("version") == CACHE_VERSION and data.get("identity") == identity:
                self.scores = dict(data.get("scores", {}))

    def save(self) -> None:
        data = {"version": CACHE_VERSION, "identity": self.identity, "scores": self.scores}
        atomic_write_json(self.path, data)


ScoreFn = Callable[[PromptSet, list[int], int], np.ndarray]  # (prompts, indices, seed) -> (len, samples)


def base_scores(
    data: PromptSet, indices: Sequence[int], score: ScoreFn, seed: int, cache: ScoreCache
) -> tuple[np.ndarray, int]:
    """Mean base score of each prompt in ``indices`` (cached ones read, the rest sampled and stored), and
    how many were read from the cache."""
    keys = [f"{seed}:{prompt_key(data.token_ids[i])}" for i in indices]
    missing = [i for i, key in zip(indices, keys, strict=True) if key not in cache.scores]
    if missing:
        from alignment.console import err

        err.print(
            f"[dim]headroom: scoring {len(missing)} prompts with the starting model "
            f"({len(keys) - len(missing)} cached)[/]"
        )
        fresh = score(data, missing, seed)
        for i, row in zip(missing, fresh, strict=True):
            cache.scores[f"{seed}:{prompt_key(data.token_ids[i])}"] = [round(float(v), 6) for v in row]
        cache.save()
    means = np.array([np.mean(cache.scores[key]) for key in keys], dtype=float)
    return means, len(indices) - len(missing)


def pool_indices(n: int, pool: int | None, seed: int) -> list[int]:
    """All ``n`` indices, or a seeded subset of ``pool`` of them (sorted).

    >>> pool_indices(5, None, 0), len(pool_indices(100, 10, 0))
    ([0, 1, 2, 3, 4], 10)
    """
    if pool is None or pool >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=pool, replace=False))


def select(
    cfg: HeadroomConfig,
    data: PromptSet,
    score: ScoreFn,
    seed: int,
    cache: ScoreCache,
    *,
    pool: int | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """Indices of the prompts to keep and a record of the selection for ``stage.json``."""
    assert cfg.headroom_quantile is not None
    candidates = pool_indices(len(data), pool, seed)
    means, cached = base_scores(data, candidates, score, seed, cache)
    kept_positions = lowest_quantile(means.tolist(), cfg.headroom_quantile)
    kept = [candidates[p] for p in kept_positions]
    threshold = float(max(means[kept_positions]))
    info = {
        "scored": len(candidates),
        "from_cache": cached,
        "kept": len(kept),
        "threshold": round(threshold, 6),
        "base_mean_all": round(float(means.mean()), 6),
        "base_mean_kept": round(float(means[kept_positions].mean()), 6),
        "seed": seed,
    }
    return kept, info


def subset(data: PromptSet, indices: Sequence[int]) -> PromptSet:
    """The prompts at ``indices`` as a new :class:`PromptSet` (``dropped`` carried over)."""
    prompts, token_ids, columns = data.select(indices)
    return PromptSet(prompts, token_ids, columns, data.dropped)


def apply_headroom(
    cfg: HeadroomConfig,
    train: PromptSet,
    heldout: PromptSet | None,
    score: ScoreFn,
    *,
    seed: int,
    cache_path: Path,
    identity: dict[str, Any],
) -> tuple[list[int], list[int] | None, dict[str, Any]]:
    """Indices of the train prompts with headroom, of the held-out ones (None: keep all, without
    ``headroom_heldout``), and the record for ``stage.json``.

    ``score(prompts, indices, seed)`` samples ``headroom_samples`` completions per prompt from the
    starting model.
    """
    cache = ScoreCache(cache_path, identity)
    kept, info = select(cfg, train, score, seed, cache, pool=cfg.headroom_pool)
    record: dict[str, Any] = {
        "quantile": cfg.headroom_quantile,
        "samples": cfg.headroom_samples,
        "cache": str(cache_path),
        "train": info,
    }
    kept_heldout = None
    if cfg.headroom_heldout and heldout is not None:
        kept_heldout, record["heldout"] = select(cfg, heldout, score, seed + HELDOUT_SEED_OFFSET, cache)
    return kept, kept_heldout, record


def headroom_identity(cfg: Any, source: Any, reward: Any, reward_fn: Any | None) -> dict[str, Any]:
    """What the base scores of a prompt depend on besides the sampling settings: the starting model, the
    reward (its spec, or the callable's name), and how prompts are rendered and cut."""
    return {
        "model": str(source.path),
        "reward": cfg.reward if reward_fn is None else getattr(reward, "__name__", type(reward).__name__),
        "system_prompt": cfg.system_prompt,
        "chat_template": cfg.chat_template,
        "max_length": cfg.max_length,
    }


def choose_prompts(
    cfg: Any,
    lm: Any,
    tokenizer: Any,
    reward_fn: Any,
    train: PromptSet,
    heldout: PromptSet | None,
    *,
    run_dir: Path,
    identity: dict[str, Any],
    eos_token_ids: Sequence[int],
) -> tuple[list[int], list[int] | None, dict[str, Any]]:
    """:func:`apply_headroom` with ``lm`` (the starting policy) sampling as the stage samples
    (``max_new_tokens``, ``temperature``); call it only when ``headroom_quantile`` is set.

    ``identity`` names the model and reward; with the sampling settings it keys the score cache.
    """
    from alignment.rl.scoring import score_as_stage

    def score(data: PromptSet, indices: list[int], seed: int) -> np.ndarray:
        samples = cfg.headroom_samples
        return score_as_stage(
            cfg, lm, tokenizer, data, indices, reward_fn, eos_token_ids, samples=samples, seed=seed
        ).scores

    sampling = {
        "samples": cfg.headroom_samples,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
    }
    cache_path = Path(cfg.headroom_cache).expanduser() if cfg.headroom_cache else run_dir / "headroom.json"
    return apply_headroom(
        cfg,
        train,
        heldout,
        score,
        seed=cfg.headroom_seed,
        cache_path=cache_path,
        identity={**identity, **sampling},
    )
