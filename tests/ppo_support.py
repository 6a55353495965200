"""Prompt datasets and toy rewards for the PPO/GRPO/RLOO tests (tiny-random, offline)."""

from __future__ import annotations

from pathlib import Path

from stages_support import SUBJECTS, save_splits

TOPICS = [*SUBJECTS, "the students", "people"]

# The toy reward, as source for a plugin file (`reward: <dir>/toy_reward.py:space_share`) and as a function.
TOY_REWARD_SOURCE = '''
def space_share(prompts, completions, completion_ids, **kwargs):
    """Spaces per completion token (about the share of word-initial tokens), capped at 1."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [min(t.count(" ") / max(len(ids), 1), 1.0) for t, ids in zip(texts, completion_ids)]
'''
_namespace: dict = {}
exec(TOY_REWARD_SOURCE, _namespace)
space_share = _namespace["space_share"]


def write_prompts(path: Path, train: int = 32, test: int = 8, conversational: bool = False) -> Path:
    """A prompt pool in the data builders' layout: `prompt` (+ `source`), train and test splits."""

    def row(i: int) -> dict:
        text = f"Tell me about {TOPICS[i % len(TOPICS)]} number {i}."
        return {"prompt": [{"role": "user", "content": text}] if conversational else text, "source": "toy"}

    return save_splits(path, row, train, test)


def write_toy_reward(folder: Path) -> str:
    """Write the toy reward plugin and return its spec."""
    file = folder / "toy_reward.py"
    file.write_text(TOY_REWARD_SOURCE, encoding="utf-8")
    return f"{file}:space_share"
