"""Deterministic grouped train/test splits that every module agrees on.

:func:`assign_split` decides from a hash of ``(seed, group key)`` alone, so the evaluation suites and
the builders hold out exactly the same groups without sharing state, and adding or removing other
rows never moves a group to the other side. Because the decision does not look at the label, each
bias type is split in the same expected proportion (stratified in expectation; the dataset card
reports the realised fraction per bias type).

With ``val_fraction`` > 0 a validation split is carved from the training side (the groups whose score
falls in ``[test_fraction, test_fraction + val_fraction)``): recipes are chosen there, and the test split
is scored once for the chosen recipe.

Group keys: CrowS-Pairs ``pair.group`` (the pair id; exact duplicates share the first one's id),
StereoSet the target term, rewrite pairs the normalised source text (``pair.group``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from alignment.errors import SafealignError
from data_builders.text import normalize_text

SPLITS = ("train", "validation", "test")


def check_fraction(test_fraction: float, val_fraction: float = 0.0) -> float:
    """Validate the held-out fractions (each >= 0, together < 1); returns ``test_fraction``."""
    if not 0.0 <= float(test_fraction) < 1.0:
        raise SafealignError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not 0.0 <= float(val_fraction) < 1.0 - float(test_fraction):
        raise SafealignError(
            f"val_fraction must be in [0, 1 - test_fraction), got {val_fraction} with test_fraction "
            f"{test_fraction}"
        )
    return float(test_fraction)


def split_score(key: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) from ``(seed, key)``; the split compares it with the test fraction."""
    digest = hashlib.sha256(f"safealign-split:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.0) -> str:
    """``"test"`` for a held-out group, ``"validation"`` for a group carved from the training side for
    choosing recipes and hyper-parameters, else ``"train"``; same inputs, same answer, everywhere.

    The test groups do not depend on ``val_fraction``: adding a validation split only moves groups
    out of training, never out of the test split.

    >>> assign_split("pair-17") == assign_split("pair-17")
    True
    >>> sum(assign_split(str(i)) == "test" for i in range(10_000)) / 10_000  # about 0.2
    0.2024
    >>> assign_split("anything", test_fraction=0.0)
    'train'
    >>> keys = [str(i) for i in range(10_000)]
    >>> sides = [assign_split(k, 0.2, val_fraction=0.1) for k in keys]
    >>> sides.count("validation") / len(keys)  # about 0.1
    0.1002
    >>> all(assign_split(k) == "test" for k, s in zip(keys, sides) if s == "test")
    True
    """
    score = split_score(str(key), seed)
    test_fraction = check_fraction(test_fraction, val_fraction)
    if score < test_fraction:
        return "test"
    return "validation" if score < test_fraction + float(val_fraction) else "train"


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
