"""Leakage audit: no text a model was trained on may be an item it is evaluated on.

Builders already split by group and drop train rows that share text with their own test split; this
audit checks the finished product end to end. It collects every text of the training datasets' train
splits (message contents, plain strings, and prompt+answer concatenations, since preference rows may cut
a sentence into a shared prefix and two endings) and the sentences of the items each evaluation actually
scored, normalises both (``data_builders.text.normalize_text``) and reports exact matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignment.io import file_lines
from data_builders.text import normalize_text

ANSWER_COLUMNS = ("completion", "chosen", "rejected")
MIN_CHARS = 12  # shorter strings (single words, labels) are not evidence of leakage


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _strings(value.get("content", ""))
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    return []


def row_texts(row: dict[str, Any]) -> set[str]:
    """Normalised texts of one training row, including prompt+answer joins.

    >>> sorted(row_texts({"prompt": "The nurse said", "chosen": " she was late.", "rejected": "!"}))
    ['she was late', 'the nurse said', 'the nurse said she was late']
    """
    texts = {t for v in row.values() for t in _strings(v)}
    prompts = _strings(row.get("prompt", ""))
    for column in ANSWER_COLUMNS:
        for answer in _strings(row.get(column, "")):
            texts.update(p + answer for p in prompts[-1:])
            texts.update(p + " " + answer for p in prompts[-1:])
    normalised = {normalize_text(t) for t in texts}
    return {t for t in normalised if len(t) >= MIN_CHARS}


def training_texts(dataset_dirs: Iterable[str | Path]) -> set[str]:
    """Every normalised text in the ``train`` split of each built dataset."""
    from data_builders import load_built

    texts: set[str] = set()
    for path in dataset_dirs:
        for row in load_built(path)["train"]:
            texts |= row_texts(row)
    return texts


def _evaluated_ids(eval_dir: Path, suite: str) -> list[str]:
    path = eval_dir / "samples" / f"{suite}.jsonl"
    if not path.is_file():
        return []
    return [
        str(json.loads(line)["id"]) for line in file_lines(path.read_text(encoding="utf-8")) if line.strip()
    ]


def evaluated_texts(eval_dir: str | Path) -> dict[str, dict[str, list[str]]]:
    """Sentences of the items scored by the suites built on training sources: ``{suite: {id: [texts]}}``
    (the rewrite suite's samples carry their input and reference texts)."""
    from data_builders.sources import load_crows_pairs, load_stereoset

    eval_dir = Path(eval_dir)
    out: dict[str, dict[str, list[str]]] = {}
    ids = set(_evaluated_ids(eval_dir, "crows_pairs"))
    if ids:
        out["crows_pairs"] = {p.id: [p.sent_more, p.sent_less] for p in load_crows_pairs() if p.id in ids}
    ids = set(_evaluated_ids(eval_dir, "stereoset"))
    if ids:
        out["stereoset"] = {s.id: [s.context, *s.sentences.values()] for s in load_stereoset() if s.id in ids}
    rewrites = eval_dir / "samples" / "rewrite.jsonl"
    if rewrites.is_file():
        records = [
            json.loads(line) for line in file_lines(rewrites.read_text(encoding="utf-8")) if line.strip()
        ]
        out["rewrite"] = {str(r["id"]): [r["input"], r["reference"]] for r in records}
    return out


def leakage_audit(dataset_dirs: Iterable[str | Path], eval_dir: str | Path) -> dict[str, Any]:
    """Exact-match overlap between training texts and evaluated items; ``passed`` when there is none."""
    train = training_texts(dataset_dirs)
    suites = {}
    for suite, items in evaluated_texts(eval_dir).items():
        hits = {i: [t for t in texts if normalize_text(t) in train] for i, texts in items.items()}
        hits = {i: t for i, t in hits.items() if t}
        suites[suite] = {
            "items": len(items),
            "overlapping_items": len(hits),
            "examples": list(hits.values())[:3],
        }
    total = sum(s["overlapping_items"] for s in suites.values())
    return {
        "method": "exact match of normalised texts: training rows (train splits) vs evaluated items",
        "training_texts": len(train),
        "suites": suites,
        "overlapping_items": total,
        "passed": total == 0,
    }
