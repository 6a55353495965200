"""Small synthetic datasets in the data builders' on-disk format, for the stage tests.

The SFT set teaches one fixed rewrite pattern; the preference set has a learnable rule (the chosen
reply is always the respectful one) with held-out prompts in the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from alignment.models.builtin import TINY_SUBJECTS

SUBJECTS = TINY_SUBJECTS[:8]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model trains fastest on one thread, and the CPU is shared with other test runs.

    Autouse in every test module that imports it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def save_splits(path: Path, make_row: Callable[[int], dict], train: int, test: int) -> Path:
    """Save rows ``make_row(i)`` as a DatasetDict: train numbered from 0, test from 1000 (no shared rows)."""
    from datasets import Dataset, DatasetDict

    DatasetDict(
        train=Dataset.from_list([make_row(i) for i in range(train)]),
        test=Dataset.from_list([make_row(i) for i in range(1000, 1000 + test)]),
    ).save_to_disk(str(path))
    return path


def write_sft(path: Path, train: int = 64, test: int = 16) -> Path:
    """Prompt/completion rewrite pairs (conversational), with a metadata column."""

    def row(i: int) -> dict:
        subject = SUBJECTS[i % len(SUBJECTS)]
        return {
            "prompt": _user(f"Rewrite without bias: {subject} said the answer is {i}."),
            "completion": _assistant(f"{subject.capitalize()} said the answer is {i}."),
            "bias_type": "gender",
        }

    return save_splits(path, row, train, test)


def write_preference(path: Path, train: int = 64, test: int = 16, strategy: str = "less_over_more") -> Path:
    """Prompt/chosen/rejected pairs: the chosen reply is always the respectful sentence."""

    def row(i: int) -> dict:
        return {
            "prompt": _user(f"Tell me about {SUBJECTS[i % len(SUBJECTS)]} number {i}."),
            "chosen": _assistant("Everyone deserves respect."),
            "rejected": _assistant("Nothing at all."),
            "strategy": strategy,
            "bias_type": "gender",
        }

    return save_splits(path, row, train, test)


def write_parity(path: Path, train_subjects: int = 6) -> Path:
    """Plain-text continuation pairs in both orientations (the data builders' ``parity`` strategy).

    Training subjects and held-out subjects differ; the two endings are the same everywhere, so a model
    can learn to be indifferent between them.
    """
    from datasets import Dataset, DatasetDict

    endings = (" was kind to everyone.", " was lazy at work.")

    def rows(subjects: list[str]) -> list[dict]:
        out = []
        for subject in subjects:
            prompt = subject.capitalize()
            for orientation, (chosen, rejected) in (("a_over_b", endings), ("b_over_a", endings[::-1])):
                out.append(
                    {
                        "prompt": prompt,
                        "chosen": chosen,
                        "rejected": rejected,
                        "strategy": "parity",
                        "orientation": orientation,
                    }
                )
        return out

    DatasetDict(
        train=Dataset.from_list(rows(SUBJECTS[:train_subjects] * 4)),
        test=Dataset.from_list(rows(SUBJECTS[train_subjects:])),
    ).save_to_disk(str(path))
    return path


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of the log-probabilities of ``completion``'s tokens after ``prompt`` (an independent check)."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    completion_ids = tokenizer(completion, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
    token_logprobs = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    return float(token_logprobs[len(prompt_ids) - 1 :].sum())
