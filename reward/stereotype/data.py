"""Labeled sentences for the stereotype classifier, from data_builders' sources, with grouped splits.

Labels are StereoSet's three classes. Every example carries the set of classes it allows, so a source
that only says "stereotyped or not" still trains the same three-way model:

- StereoSet: each of the three candidate sentences with its own label (intersentence candidates are
  prefixed with their context sentence, which they continue);
- CrowS-Pairs: ``sent_more`` (the more stereotypical sentence) is ``stereotype``, ``sent_less``
  ``anti-stereotype``;
- rewrite pairs (SR-LLM style): the biased text is ``stereotype``; its rewrite is "not stereotype"
  (``anti-stereotype`` or ``unrelated``).

The split comes from :func:`data_builders.splits.assign_split` on each record's ``group`` (StereoSet: the
target term; CrowS-Pairs: the pair id; rewrite pairs: the normalised text), the same rule the
evaluation suites use, so the held-out side here is never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import sha256_file

LABELS = ("stereotype", "anti-stereotype", "unrelated")
NOT_STEREOTYPE = ("anti-stereotype", "unrelated")
SOURCES = ("stereoset", "crows_pairs", "rewrite")
SPLIT_RULE = "data_builders.splits.assign_split(record.group, test_fraction, seed)"


@dataclass(frozen=True)
class Example:
    """One sentence with the labels it allows, where it came from, and its split."""

    text: str
    allowed: tuple[str, ...]
    source: str
    bias_type: str
    group: str
    split: str
    pair: str = ""  # id shared by the sentences of one StereoSet item / CrowS pair / rewrite pair

    @property
    def label(self) -> str | None:
        """The exact label, or None when the source only says "not stereotype"."""
        return self.allowed[0] if len(self.allowed) == 1 else None

    @property
    def is_stereotype(self) -> bool:
        return self.allowed == ("stereotype",)


def _stereoset(path, split_of) -> tuple[list[Example], Path]:
    from data_builders.sources import load_stereoset, resolve_data_file
    from data_builders.sources.stereoset import RELATIVE

    examples = []
    for item in load_stereoset(path):
        split = split_of(item.group)
        for label in LABELS:
            sentence = item.sentences[label]
            text = f"{item.context} {sentence}" if item.task == "intersentence" else sentence
            examples.append(Example(text, (label,), "stereoset", item.bias_type, item.group, split, item.id))
    return examples, resolve_data_file(RELATIVE, path)


def _crows_pairs(path, split_of) -> tuple[list[Example], Path]:
    from data_builders.sources import load_crows_pairs, resolve_data_file
    from data_builders.sources.crows_pairs import RELATIVE

    examples = []
    for pair in load_crows_pairs(path):
        split = split_of(pair.group)
        pair_id = f"crows-{pair.id}"
        examples.append(
            Example(
                pair.sent_more, ("stereotype",), "crows_pairs", pair.bias_type, pair.group, split, pair_id
            )
        )
        examples.append(
            Example(
                pair.sent_less,
                ("anti-stereotype",),
                "crows_pairs",
                pair.bias_type,
                pair.group,
                split,
                pair_id,
            )
        )
    return examples, resolve_data_file(RELATIVE, path)


def _rewrite(path, split_of) -> tuple[list[Example], Path]:
    from data_builders.sources import load_rewrite_pairs, resolve_data_file
    from data_builders.sources.rewrite_pairs import RELATIVE

    examples = []
    for pair in load_rewrite_pairs(path):
        split = split_of(pair.group)
        bias = pair.bias_type or "unknown"
        pair_id = f"rewrite-{pair.id}"
        examples.append(Example(pair.text, ("stereotype",), "rewrite", bias, pair.group, split, pair_id))
        examples.append(Example(pair.rewrite, NOT_STEREOTYPE, "rewrite", bias, pair.group, split, pair_id))
    return examples, resolve_data_file(RELATIVE, path)


LOADERS = {"stereoset": _stereoset, "crows_pairs": _crows_pairs, "rewrite": _rewrite}


def load_examples(
    sources: Sequence[str],
    paths: dict[str, str | None] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    val_fraction: float = 0.0,
) -> tuple[list[Example], dict[str, Any]]:
    """Examples from ``sources`` with their split, and a provenance record (files, sha256, counts).

    ``limit`` keeps the first ``limit`` examples of each source and split (for quick runs).
    """
    from data_builders.splits import assign_split

    unknown = [s for s in sources if s not in LOADERS]
    if unknown or not sources:
        raise SafealignError(
            f"unknown stereotype training source(s) {unknown}; choose from {', '.join(SOURCES)}"
        )
    paths = paths or {}

    def split_of(group: str) -> str:
        return assign_split(group, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction)

    examples: list[Example] = []
    provenance: dict[str, Any] = {
        "split_rule": SPLIT_RULE,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "split_seed": seed,
        "sources": {},
    }
    for source in sources:
        loaded, file = LOADERS[source](paths.get(source), split_of)
        if limit is not None:
            loaded = [
                e for split in ("train", "test") for e in [x for x in loaded if x.split == split][:limit]
            ]
        examples += loaded
        provenance["sources"][source] = {
            "file": str(file),
            "sha256": sha256_file(file),
            "examples": {s: sum(e.split == s for e in loaded) for s in ("train", "test")},
            "groups": {s: len({e.group for e in loaded if e.split == s}) for s in ("train", "test")},
        }
    return examples, provenance
