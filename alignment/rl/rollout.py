"""Rollouts: sample completions for a batch of prompts, find where they end, score them, and compute
per-token log-probs and values with one teacher-forced forward pass.

Layout: queries are left-padded (``query_mask``), responses right-padded after their first EOS
(``response_mask`` is 1 up to and including that EOS). Concatenated, every sequence is
``[pad.. prompt | response ..pad]``, so the response logits are the last ``R + 1`` positions of the
LM output, shifted by one.
"""

from __future__ import annotations

import inspect
import math
import numbers
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignment.rl.losses import entropy_from_logits, logprobs_from_logits
from alignment.rl.prompts import left_pad

RewardFn = Callable[..., list[float]]


class GuardTripped(RuntimeError):
    """Training must stop: a non-finite loss/reward, a failing reward function, or a KL above the ceiling."""


class RewardFailed(GuardTripped, ValueError):
    """The reward function raised, or returned something that is not one score per completion."""


def reward_label(reward_fn: RewardFn) -> str:
    """How errors name a reward function: its name, and the file that defines it when it is a function.

    >>> def polite(prompts, completions, **kwargs): ...
    >>> reward_label(polite).startswith("'polite' (")
    True
    """
    name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
    target = inspect.unwrap(getattr(reward_fn, "func", reward_fn))
    if not inspect.isfunction(target):
        return repr(name)
    try:
        file = inspect.getsourcefile(target)
    except TypeError:
        file = None
    return f"{name!r} ({Path(file).name})" if file else repr(name)


def _raised_at(exc: BaseException) -> str:
    """`` at file.py:LINE``: where the innermost frame of an exception's traceback was."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (what ``generate`` uses), so teacher forcing matches sampling.

    >>> position_ids_from_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    tensor([[0, 0, 1],
            [0, 1, 2]])
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(
    response_ids: torch.Tensor, eos_token_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, ended)``: mask is 1 up to and including the first EOS; ``ended`` says an EOS was produced.

    >>> response_mask(torch.tensor([[5, 2, 7, 7], [5, 6, 7, 8]]), eos_token_ids=[2])
    (tensor([[1, 1, 0, 0],
            [1, 1, 1, 1]]), tensor([ True, False]))
    """
    is_eos = torch.isin(response_ids, torch.tensor(list(eos_token_ids), device=response_ids.device))
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS tokens strictly before each position
    mask = (eos_before == 0).long()
    return mask, is_eos.any(-1)


@torch.no_grad()
def sample_responses(
    policy: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
) -> torch.Tensor:
    """Sample one completion per query from the policy's own distribution at ``temperature``.

    No top-k/top-p/repetition penalty: PPO's importance ratios assume the samples come from exactly
    the distribution whose log-probs are trained. Returns the generated tokens ``(B, <=max_new_tokens)``.
    """
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_token_ids),
        pad_token_id=pad_token_id,
    )
    output = policy.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=config)
    return output[:, query_ids.shape[1] :]


@torch.no_grad()
def sample_padded(
    lm: Any,
    token_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    device: Any,
) -> tuple[torch.Tensor, ...]:
    """Left-pad the prompts and sample one completion each (:func:`sample_responses`): ``(query_ids,
    query_mask, response_ids, response_mask, ended)``, the responses padded after their first EOS."""
    query_ids, query_mask = (t.to(device) for t in left_pad(token_ids, pad_token_id))
    responses = sample_responses(
        lm,
        query_ids,
        query_mask,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
    )
    mask, ended = response_mask(responses, eos_token_ids)
    return query_ids, query_mask, responses.masked_fill(mask == 0, pad_token_id), mask, ended


@dataclass
class Completions:
    """Sampled and scored completions of a batch of prompts (responses padded after their first EOS)."""

    query_ids: torch.Tensor  # (B, P), left-padded
    query_mask: torch.Tensor
    response_ids: torch.Tensor  # (B, R), pad after the first EOS
    response_mask: torch.Tensor
    ended: torch.Tensor  # (B,) an EOS was produced
    completions: list[Any]  # text, or [{"role": "assistant", ...}] for conversational prompts
    scores: list[float]  # the reward's raw scores (NaN where it returned None)


@torch.no_grad()
def sample_and_score(
    lm: Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[Any],
    token_ids: list[list[int]],
    columns: dict[str, list[Any]],
    *,
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: Sequence[int],
    device: Any,
) -> Completions:
    """Sample one completion per prompt from ``lm`` (see :func:`sample_responses`), decode and score it."""
    pad = tokenizer.pad_token_id
    query_ids, query_mask, responses, mask, ended = sample_padded(
        lm,
        token_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad,
        device=device,
    )
    completion_ids = [row[m.bool()].tolist() for row, m in zip(responses, mask, strict=True)]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    completions: list[Any] = [
        t if isinstance(p, str) else [{"role": "assistant", "content": t}]
        for p, t in zip(prompts, texts, strict=True)
    ]
    scores = score_completions(reward_fn, prompts, completions, completion_ids, **columns)  # or RewardFailed
    return Completions(query_ids, query_mask, responses, mask, ended, completions, scores)


def _inputs(query_ids, query_mask, response_ids, response_mask_):
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask, response_mask_], dim=1)
    return input_ids, attention_mask, position_ids_from_mask(attention_mask)


def policy_forward(
    model: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask_: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, values)`` at the response tokens from a :class:`~alignment.rl.value_head.PolicyWithValue`.

    Logits are divided by ``temperature`` (the sampling distribution); values are those of the state
    before each response token.
    """
    input_ids, attention_mask, position_ids = _inputs(query_ids, query_mask, response_ids, response_mask_)
    length = response_ids.shape[1]
    logits, values = model(input_ids, attention_mask, position_ids, logits_to_keep=length + 1)
    return logits[:, :-1] / temperature, values[:, :-1]


def lm_logprobs(
    lm: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask_: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Log-probs of the response tokens under a plain causal LM (the reference policy)."""
    input_ids, attention_mask, position_ids = _inputs(query_ids, query_mask, response_ids, response_mask_)
    length = response_ids.shape[1]
    logits = lm(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=length + 1,
        use_cache=False,
    ).logits
    return logprobs_from_logits(logits[:, :-1] / temperature, response_ids)


@torch.no_grad()
def rollout_statistics(
    model: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask_: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logprobs, values, entropy)`` of the sampled responses, computed in chunks of ``chunk_size``."""
    parts = []
    for start in range(0, query_ids.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        logits, values = policy_forward(
            model, query_ids[sl], query_mask[sl], response_ids[sl], response_mask_[sl], temperature
        )
        parts.append(
            (logprobs_from_logits(logits, response_ids[sl]), values.float(), entropy_from_logits(logits))
        )
    return tuple(torch.cat(column, dim=0) for column in zip(*parts, strict=True))  # type: ignore[return-value]


@torch.no_grad()
def reference_logprobs(
    ref: Any,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask_: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> torch.Tensor:
    """Log-probs of the sampled responses under the reference LM, in chunks of ``chunk_size``."""
    parts = []
    for start in range(0, query_ids.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        parts.append(
            lm_logprobs(ref, query_ids[sl], query_mask[sl], response_ids[sl], response_mask_[sl], temperature)
        )
    return torch.cat(parts, dim=0)


def score_completions(
    reward_fn: RewardFn,
    prompts: list[Any],
    completions: list[Any],
    completion_ids: list[list[int]],
    **columns: list[Any],
) -> list[float]:
    """Call a reward function with TRL's signature and return one float per completion.

    ``None`` (TRL's "not applicable") becomes NaN, which the guards report. A reward that raises or
    exits, or returns anything but one real number per completion (a string, a generator, a meta
    tensor, a wrong count), stops training with :class:`RewardFailed` naming the function.
    """
    name = reward_label(reward_fn)
    try:
        raw = reward_fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    except (Exception, SystemExit) as exc:
        from alignment.errors import SafealignError

        if isinstance(exc, SafealignError):  # already names the reward and the problem
            raise RewardFailed(f"reward {name}: {exc}") from exc
        raise RewardFailed(f"the reward {name} raised {type(exc).__name__}: {exc}{_raised_at(exc)}") from exc
    return reward_values(raw, len(completions), name)


def reward_values(raw: Any, count: int, name: str) -> list[float]:
    """``count`` floats from what a reward returned (a list, tuple, 1-d tensor or array of numbers).

    >>> reward_values((1, 0.5, None), 3, "'r'")
    [1.0, 0.5, nan]
    >>> reward_values("abc", 3, "'r'")
    Traceback (most recent call last):
    ...
    alignment.rl.rollout.RewardFailed: reward function 'r' returned str, expected a list of numbers
    """
    if torch.is_tensor(raw):
        raw = _tensor_values(raw, name, "its result")
    elif hasattr(raw, "tolist") and hasattr(raw, "ndim"):  # a numpy array
        raw = raw.tolist() if raw.ndim == 1 else raw
    if not isinstance(raw, (list, tuple)):
        kind = type(raw).__name__
        raise RewardFailed(f"reward function {name} returned {kind}, expected a list of numbers")
    if len(raw) != count:
        raise RewardFailed(f"reward function {name} returned {len(raw)} scores for {count} completions")
    return [_number(value, name, i) for i, value in enumerate(raw, start=1)]


def _tensor_values(value: torch.Tensor, name: str, what: str) -> Any:
    if value.is_meta:
        raise RewardFailed(f"reward function {name} returned a meta tensor as {what}: it holds no values")
    return value.detach().float().cpu().tolist()


def _number(value: Any, name: str, index: int) -> float:
    if value is None:
        return math.nan
    if torch.is_tensor(value) and value.numel() == 1:
        value = _tensor_values(value.reshape(()), name, f"score {index}")
    if isinstance(value, numbers.Real):
        return float(value)
    shown = repr(value)[:40]
    raise RewardFailed(
        f"reward function {name} returned {type(value).__name__} {shown} as score {index}, expected a number"
    )


def reward_components(reward_fn: RewardFn) -> dict[str, float]:
    """Mean of each component of the last call, for composite rewards that expose ``last_components``."""
    components = getattr(reward_fn, "last_components", None)
    if not isinstance(components, dict):
        return {}
    means = {}
    for key, values in components.items():
        numbers = [float(v) for v in values if v is not None]
        if numbers:
            means[str(key)] = sum(numbers) / len(numbers)
    return means
