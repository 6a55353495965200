"""Prompts for rollouts: render with the chat template, tokenize, drop over-long ones, and draw batches
from a seeded stream so a resumed run sees exactly the prompts an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignment.generation import format_prompt


def render_prompt(tokenizer: Any, prompt: Any, system: str | None = None, chat: bool | None = None) -> str:
    """The text the policy continues: a plain string prompt through the chat template (when the tokenizer
    has one and ``chat`` is not False), or a conversation (list of ``{role, content}``) through it."""
    if isinstance(prompt, str):
        return format_prompt(tokenizer, prompt, system=system, chat=chat)
    messages = list(prompt)
    if system and not (messages and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": system}] + messages
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class PromptSet:
    """Tokenized prompts with the raw prompt and the other dataset columns of each row (for rewards)."""

    prompts: list[Any]
    token_ids: list[list[int]]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    dropped: int = 0  # rows left out because prompt + completion would exceed the length limit

    def __len__(self) -> int:
        return len(self.token_ids)

    def select(self, indices: Sequence[int]) -> tuple[list[Any], list[list[int]], dict[str, list[Any]]]:
        return (
            [self.prompts[i] for i in indices],
            [self.token_ids[i] for i in indices],
            {name: [values[i] for i in indices] for name, values in self.columns.items()},
        )


def encode_prompts(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    prompt_column: str = "prompt",
    max_prompt_tokens: int,
    system: str | None = None,
    chat: bool | None = None,
) -> PromptSet:
    """Render and tokenize every row's prompt; rows longer than ``max_prompt_tokens`` are dropped."""
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    prompts, token_ids, dropped = [], [], 0
    columns: dict[str, list[Any]] = {}
    for row in rows:
        prompt = row[prompt_column]
        text = render_prompt(tokenizer, prompt, system=system, chat=use_chat)
        ids = tokenizer(text, add_special_tokens=not use_chat)["input_ids"]
        if len(ids) > max_prompt_tokens or not ids:
            dropped += 1
            continue
        prompts.append(prompt)
        token_ids.append(ids)
        for name, value in row.items():
            if name != prompt_column:
                columns.setdefault(name, []).append(value)
    return PromptSet(prompts, token_ids, columns, dropped)


def batch_indices(
    n: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Row indices for one process at one step, from an endless stream of seeded epoch shuffles.

    The stream depends only on ``(n, seed)``: step ``s`` of process ``r`` takes the items at positions
    ``(s * world_size + r) * batch_size ...`` of it, so batches never depend on earlier state.

    >>> batch_indices(5, 2, step=0, seed=1) + batch_indices(5, 2, step=1, seed=1) + batch_indices(5, 1, 4, 1)
    [4, 2, 1, 0, 3]
    """
    start = (step * world_size + rank) * batch_size
    out, epochs = [], {}
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n)
        if epoch not in epochs:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            epochs[epoch] = torch.randperm(n, generator=generator).tolist()
        out.append(epochs[epoch][offset])
    return out


def left_pad(token_ids: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every sequence padded on the left to the longest one.

    >>> left_pad([[5, 6], [7]], pad_token_id=0)
    (tensor([[5, 6],
            [0, 7]]), tensor([[1, 1],
            [0, 1]]))
    """
    width = max(len(ids) for ids in token_ids)
    ids = torch.full((len(token_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, seq in enumerate(token_ids):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask
