"""Deterministic grouped train/test splits that every module agrees on.

:func:`assign_split` decides from a hash of ``(seed, group key)`` alone, so the evaluation suites and
the builders hold out exactly the same groups without sharing state, and adding or removing other
rows never moves a group to the other side. Because the decision does not look at the label, each
bias type is split in the same expected proportion (stratified in expectation; the dataset card
reports the realised fraction per bias type).

Group keys: CrowS-Pairs ``pair.group`` (the pair id; exact duplicates share the first one's id),
StereoSet the target term, rewrite pairs the normalised source text (``pair.group``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from alignment.errors import SafealignError
from data_builders.text import normalize_text

SPLITS = ("train", "test")


def check_fraction(test_fraction: float) -> float:
    """Validate a held-out fraction (0 <= f < 1)."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise SafealignError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return float(test_fraction)


def split_score(key: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) from ``(seed, key)``; the split compares it with the test fraction."""
    digest = hashlib.sha256(f"safealign-split:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, test_fraction: float = 0.2, seed: int = 0) -> str:
    """``"test"`` for a held-out group, else ``"train"``; same inputs, same answer, everywhere.

    >>> assign_split("pair-17") == assign_split("pair-17")
    True
    >>> sum(assign_split(str(i)) == "test" for i in range(10_000)) / 10_000  # about 0.2
    0.2024
    >>> assign_split("anything", test_fraction=0.0)
    'train'
    """
    return "test" if split_score(str(key), seed) < check_fraction(test_fraction) else "train"


def connected_groups(ids: Sequence[str], texts: Sequence[Sequence[str]]) -> list[str]:
    """Group items that share any normalised text; each group is named by its first item's id.

    Used so that exact duplicates and rows sharing a sentence can never land in different splits.

    >>> connected_groups(["a", "b", "c"], [["x y", "z"], ["q"], ["Z!", "w"]])
    ['a', 'b', 'a']
    """
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for index, item_texts in enumerate(texts):
        for text in item_texts:
            key = normalize_text(text)
            if key in owner:
                a, b = find(owner[key]), find(index)
                parent[max(a, b)] = min(a, b)
            else:
                owner[key] = index
    return [ids[find(i)] for i in range(len(ids))]
