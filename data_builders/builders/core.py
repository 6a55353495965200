"""The steps every build shares: duplicates, grouped split, augmentation, leakage audit, chat rendering."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import sha256_file
from data_builders.augment import swap_words
from data_builders.sources.readers import BadRow, BadRows, RowProblem
from data_builders.splits import SPLITS, assign_split
from data_builders.text import normalize_text

UNSPECIFIED = "unspecified"


@dataclass
class Example:
    """One output row plus what the build needs to place and audit it.

    ``group`` decides the split (all rows of one group land together); ``stratum`` is the bias type
    reported per split; ``texts`` are the source sentences compared by the leakage audit (the raw
    texts, not the chat-formatted prompt, so a shared instruction never counts as overlap).
    """

    columns: dict[str, Any]
    group: str
    stratum: str
    texts: list[str]


@dataclass
class SourceFile:
    """A file a build read, for provenance."""

    name: str
    path: str
    sha256: str
    rows: int
    license: str

    @classmethod
    def of(cls, name: str, path: Path, rows: int, license: str) -> SourceFile:
        return cls(name=name, path=str(path), sha256=sha256_file(path), rows=rows, license=license)


@dataclass
class Built:
    """The result of a builder before it is written: rows, sources, counts and card notes."""

    examples: list[Example]
    sources: list[SourceFile]
    counts: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strategy: str = ""
    format: str = "conversational"


def merge_duplicates(
    items: list,
    key: Callable[[Any], Hashable],
    labels: Callable[[Any], Hashable],
    where: Callable[[Any], tuple[str, int | None, str]],
    log: BadRows,
) -> tuple[list, int]:
    """Keep the first of each set of exact duplicates; a duplicate with different labels is a bad row.

    Returns the kept items and how many exact duplicates were merged away.
    """
    first: dict[Hashable, Any] = {}
    kept, merged = [], 0
    for item in items:
        k = key(item)
        if k not in first:
            first[k] = item
            kept.append(item)
            continue
        if labels(first[k]) == labels(item):
            merged += 1
            continue
        path, row, column = where(item)
        first_row = where(first[k])[1]
        log.flag(path, row, RowProblem(column, f"duplicate of row {first_row} with different labels"))
    return kept, merged


def split_examples(
    examples: Iterable[Example], test_fraction: float, seed: int, val_fraction: float = 0.0
) -> dict[str, list[Example]]:
    """Place each example by ``assign_split(example.group)``: grouped, deterministic, as evaluation does."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example in examples:
        splits[assign_split(example.group, test_fraction, seed, val_fraction)].append(example)
    return splits


def _swap_value(value: Any, axis: str) -> Any:
    if isinstance(value, str):
        return swap_words(value, axis)
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return [
            m if m.get("role") == "system" else {**m, "content": swap_words(m["content"], axis)}
            for m in value
        ]
    return value


def augment_examples(
    examples: list[Example], axes: list[str], text_columns: tuple[str, ...]
) -> list[Example]:
    """Counterfactual copies of ``examples`` (one per axis where a swap changes a text column)."""
    copies = []
    for example in examples:
        for axis in axes:
            columns = {
                k: _swap_value(v, axis) if k in text_columns else v for k, v in example.columns.items()
            }
            if all(columns[k] == example.columns[k] for k in text_columns):
                continue
            columns["id"] = f"{example.columns['id']}+{axis}"
            columns["augmented"] = axis
            texts = [swap_words(t, axis) for t in example.texts]
            copies.append(replace(example, columns=columns, texts=texts))
    return copies


def leakage_audit(splits: dict[str, list[Example]]) -> tuple[dict[str, Any], list[Example]]:
    """Compare normalised texts of train with the held-out splits (test and validation); drop train rows
    that share any text with them.

    Returns the audit record (overlap before and after) and the cleaned train rows.
    """
    held_out = splits["test"] + splits.get("validation", [])
    test_texts = {normalize_text(t) for e in held_out for t in e.texts}
    train = splits["train"]
    leaked = [e for e in train if any(normalize_text(t) in test_texts for t in e.texts)]
    clean = [e for e in train if not any(normalize_text(t) in test_texts for t in e.texts)]
    train_texts = {normalize_text(t) for e in clean for t in e.texts}
    overlap_before = {normalize_text(t) for e in train for t in e.texts} & test_texts
    audit = {
        "method": "exact match of normalised texts (NFKC, case-folded, word characters only) between splits",
        "train_texts": len(train_texts),
        "test_texts": len(test_texts),
        "overlap_before": len(overlap_before),
        "train_rows_dropped": len(leaked),
        "overlap": len(train_texts & test_texts),
        "examples": sorted(overlap_before)[:5],
    }
    return audit, clean


def stratum_table(splits: dict[str, list[Example]]) -> dict[str, dict[str, Any]]:
    """Rows per stratum (bias type) and split, with the realised test fraction."""
    table: dict[str, dict[str, Any]] = defaultdict(lambda: {name: 0 for name in SPLITS})
    for name, rows in splits.items():
        for example in rows:
            table[example.stratum][name] += 1
    for counts in table.values():
        total = sum(counts[s] for s in SPLITS)
        counts["test_fraction"] = round(counts["test"] / total, 3) if total else 0.0
    return dict(sorted(table.items()))


def render_with_chat_template(examples: list[Example], model_spec: str, columns: tuple[str, ...]) -> str:
    """Turn conversational columns into plain strings with ``model_spec``'s chat template (TRL standard).

    ``prompt`` becomes the templated prompt ending with the assistant opener; each completion column
    becomes the rest of the templated conversation (the reply and its end-of-turn marker).
    Returns the tokenizer's name for provenance.
    """
    from alignment.models import load_tokenizer

    tokenizer = load_tokenizer(model_spec)
    if not getattr(tokenizer, "chat_template", None):
        raise SafealignError(f"{model_spec}: the tokenizer has no chat template, so rows cannot be rendered")
    for example in examples:
        prompt = example.columns["prompt"]
        rendered_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        for column in columns:
            full = tokenizer.apply_chat_template(prompt + example.columns[column], tokenize=False)
            if not full.startswith(rendered_prompt):
                raise SafealignError(
                    f"{model_spec}: its chat template renders the prompt differently with and without the "
                    "reply, "
                    "so prompt and completion cannot be separated; build conversational rows instead"
                )
            example.columns[column] = full[len(rendered_prompt) :]
        example.columns["prompt"] = rendered_prompt
    return getattr(tokenizer, "name_or_path", model_spec)


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
