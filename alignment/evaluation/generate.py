"""Batched, seeded sampling of continuations for the suites that score generated text.

Prompts are sorted by length (less padding), left padded, and each batch is seeded from ``(seed,
batch number)``: the same prompts, settings and seed give the same text. ``temperature=0`` is greedy
decoding (then ``num_samples`` must be 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from alignment.errors import SafealignError


@torch.inference_mode()
def sample_continuations(
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
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """``num_samples`` continuations of each raw-text prompt (special tokens removed, text not stripped).

    ``batch_size`` counts generated sequences (prompts x samples) per ``generate`` call.
    """
    if num_samples < 1 or max_new_tokens < 1:
        raise SafealignError("num_samples and max_new_tokens must be at least 1")
    sampling = temperature > 0
    if not sampling and num_samples > 1:
        raise SafealignError(
            "greedy decoding (temperature 0) gives one continuation per prompt: use num_samples 1"
        )
    if not prompts:
        return []
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i), reverse=True)
    per_batch = max(1, batch_size // num_samples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[list[str]] = [[] for _ in prompts]
    for number, start in enumerate(range(0, len(order), per_batch)):
        chosen = order[start : start + per_batch]
        width = max(len(encoded[i]) for i in chosen)
        ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, i in enumerate(chosen):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        torch.manual_seed(seed * 1_000_003 + number)
        options = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
            if sampling
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            pad_token_id=pad_id,
            **options,
        )
        texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        for row, i in enumerate(chosen):
            results[i] = texts[row * num_samples : (row + 1) * num_samples]
        if progress:
            progress(len(chosen))
    return results
