"""Prompt datasets for the RL stages (PPO, GRPO, RLOO): the data builders' prompt pools.

A prompt dataset has a ``prompt`` column (a string, or a conversation of ``{role, content}``
messages) and any metadata columns (``source``, ``group``, ...), which reach the reward functions as
keyword arguments. The stage data loader (:mod:`alignment.stages.data`) checks the ``prompt`` column.
"""

from __future__ import annotations

from typing import Any

from alignment.rl.prompts import render_prompt


def as_conversation(prompt: Any, system: str | None = None) -> list[dict[str, str]]:
    """A prompt as a conversation for TRL's chat-template handling, with an optional system message.

    >>> as_conversation("Hi", system="Be kind.")
    [{'role': 'system', 'content': 'Be kind.'}, {'role': 'user', 'content': 'Hi'}]
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not (messages and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": system}] + messages
    return messages


def prepare_for_trl(
    dataset: Any, tokenizer: Any, *, max_prompt_tokens: int, system: str | None, chat: bool | None
) -> tuple[Any, int]:
    """Shape a prompt dataset for TRL's GRPO/RLOO the way PPO sees it: the chat template applies to plain
    string prompts too (TRL would feed those raw), and prompts over ``max_prompt_tokens`` are dropped.

    Returns the dataset and the number of rows dropped.
    """
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat

    def fits(row: dict[str, Any]) -> bool:
        text = render_prompt(tokenizer, row["prompt"], system=system, chat=use_chat)
        return len(tokenizer(text, add_special_tokens=not use_chat)["input_ids"]) <= max_prompt_tokens

    kept = dataset.filter(fits)
    if use_chat:
        kept = kept.map(lambda row: {"prompt": as_conversation(row["prompt"], system)})
    return kept, len(dataset) - len(kept)
