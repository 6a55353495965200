"""Prompt formatting and the one batched, seeded sampler shared by the CLI, evaluation and tests.

:func:`sample` sorts prompts by token length (less padding), pads on the left, and seeds each batch from
``(seed, batch number)``, so the same prompts, settings and seed give the same text whatever else runs
before. ``temperature=0`` is greedy decoding. Special tokens are removed from the returned text, which
is not stripped (a continuation's leading space is part of it); :func:`generate` is the one-reply,
stripped form for already formatted prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from alignment.errors import SafealignError


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None, chat: bool | None = None) -> str:
    """Render ``prompt`` with the tokenizer's chat template (when it has one and ``chat`` is not False).

    The result ends with the assistant turn opener, ready for generation.
    """
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if not use_chat:
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token rows padded on the left to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def decoding_options(temperature: float, top_p: float) -> dict[str, Any]:
    """``generate`` keyword arguments for sampling (``temperature > 0``) or greedy decoding; every
    setting is explicit so a model's own generation config cannot change the decoding."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id."""
    value = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if value is None:
        raise SafealignError("the tokenizer has neither a pad nor an end-of-sequence token to pad with")
    return int(value)


@torch.inference_mode()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 20,
    temperature: float = 1.0,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 32,
    add_special_tokens: bool = True,
    progress: Callable[[int], None] | None = None,
    decoding: Any | None = None,
) -> list[list[str]]:
    """``num_samples`` continuations of each prompt (special tokens removed, text not stripped).

    ``add_special_tokens``: True for raw text (the tokenizer adds its BOS, if any), False for prompts
    already rendered with a chat template. ``batch_size`` counts generated sequences (prompts x
    samples x decoding copies) per ``generate`` call. ``decoding`` replaces the decoding rule: it copies
    each prompt row (``width``, ``expand``) and gives a logits processor that picks every token
    (``processor``), as :class:`alignment.evaluation.baselines.SelfDebiasDecoding` does.
    """
    if num_samples < 1 or max_new_tokens < 1:
        raise SafealignError("num_samples and max_new_tokens must be at least 1")
    if temperature <= 0 and num_samples > 1:
        raise SafealignError(
            "greedy decoding (temperature 0) gives one continuation per prompt: use num_samples 1"
        )
    if not prompts:
        return []
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i), reverse=True)
    width = decoding.width if decoding is not None else 1
    per_batch = max(1, batch_size // (num_samples * width))
    pad_id = pad_token_id(tokenizer)
    results: list[list[str]] = [[] for _ in prompts]
    for number, start in enumerate(range(0, len(order), per_batch)):
        chosen = order[start : start + per_batch]
        rows = [encoded[i] for i in chosen]
        options = {**decoding_options(temperature, top_p), "num_return_sequences": num_samples}
        if decoding is not None:  # it picks every token itself: one greedy row per sample and copy
            repeated = [row for row in rows for _ in range(num_samples)]
            rows = decoding.expand(repeated, after_start=add_special_tokens)
            options = {
                **decoding_options(0, top_p),
                "logits_processor": [decoding.processor(temperature, top_p)],
            }
        ids, mask = pad_left(rows, pad_id)
        torch.manual_seed(seed * 1_000_003 + number)
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            **options,
        )
        plain = output[: len(chosen) * num_samples, ids.shape[1] :]  # the copies follow the plain rows
        texts = tokenizer.batch_decode(plain, skip_special_tokens=True)
        for row, i in enumerate(chosen):
            results[i] = texts[row * num_samples : (row + 1) * num_samples]
        if progress:
            progress(len(chosen))
    return results


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[str]:
    """One completion per already formatted prompt (see :func:`format_prompt`), stripped.

    ``temperature == 0`` is greedy decoding; otherwise sampling seeded as :func:`sample` does.
    """
    replies = sample(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        add_special_tokens=False,
    )
    return [texts[0].strip() for texts in replies]
