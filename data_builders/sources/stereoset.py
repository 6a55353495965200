"""StereoSet dev: the official ``dev.json`` or the flattened ``stereoset/stereoset_dev_flat.jsonl``.

The flattened file has no sentence or example ids; a stable id is derived from the example's content
(``intra-<hash>`` / ``inter-<hash>``) so results can still be joined across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from alignment.errors import SafealignError, where
from data_builders.sources.readers import (
    BadRow,
    BadRows,
    RowProblem,
    choice_field,
    parse_table,
    read_json_file,
    text_field,
)
from data_builders.sources.records import StereoSetItem
from data_builders.sources.resolve import resolve_data_file

RELATIVE = "stereoset/stereoset_dev_flat.jsonl"
TASKS = ("intrasentence", "intersentence")
LABELS = ("stereotype", "anti-stereotype", "unrelated")
FLAT_COLUMNS = ("type", "target", "bias_type", "context", *LABELS)


def load_stereoset(
    path: str | os.PathLike | None = None,
    *,
    on_bad_row: str = "error",
    bad_rows: list[BadRow] | None = None,
) -> list[StereoSetItem]:
    """Load StereoSet dev (4,229 examples in the flattened file: 2,106 intra + 2,123 inter)."""
    file = Path(resolve_data_file(RELATIVE, path))
    log = BadRows(on_bad_row, bad_rows)
    if file.suffix.lower() == ".json":
        items = _load_official(file, log)
    else:
        items = parse_table(file, FLAT_COLUMNS, _parse_flat, log)
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise SafealignError(f"{where(file, None, 'id')}: example id {item.id!r} appears twice")
        seen[item.id] = item.id
    return items


def _content_id(task: str, target: str, context: str, sentences: dict[str, str]) -> str:
    payload = json.dumps([task, target, context, [sentences[k] for k in LABELS]], ensure_ascii=False)
    return f"{task[:5]}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _parse_flat(row_no: int, record: dict) -> StereoSetItem:
    task = choice_field(record, "type", TASKS)
    target = text_field(record, "target")
    context = text_field(record, "context")
    sentences = {label: text_field(record, label) for label in LABELS}
    if len(set(sentences.values())) < len(LABELS):
        raise RowProblem("anti-stereotype", "two of the three candidate sentences are identical")
    return StereoSetItem(
        id=text_field(record, "id", required=False) or _content_id(task, target, context, sentences),
        task=task,
        target=target,
        bias_type=text_field(record, "bias_type"),
        context=context,
        sentences=sentences,
    )


def _load_official(file: Path, log: BadRows) -> list[StereoSetItem]:
    data = read_json_file(file)
    tasks = data.get("data") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not any(t in tasks for t in TASKS):
        raise SafealignError(
            f"{file}: expected StereoSet's dev.json layout {{'data': {{'intrasentence': [...]}}}}"
        )
    items = []
    for task in TASKS:
        for index, example in enumerate(tasks.get(task, []), start=1):
            try:
                items.append(_parse_official(task, example))
            except RowProblem as problem:
                log.flag(f"{file} [{task}]", index, problem)
    if not items:
        raise SafealignError(f"{file}: no usable examples")
    return items


def _parse_official(task: str, example: dict) -> StereoSetItem:
    if not isinstance(example, dict):
        raise RowProblem(None, f"expected an object, got {type(example).__name__}")
    raw = example.get("sentences")
    if not isinstance(raw, list):
        raise RowProblem("sentences", "missing or not a list")
    sentences = {}
    for sentence in raw:
        label = choice_field(sentence, "gold_label", LABELS) if isinstance(sentence, dict) else None
        if label is None:
            raise RowProblem("sentences", "each sentence must be an object with gold_label and sentence")
        if label in sentences:
            raise RowProblem("sentences", f"two sentences labelled {label!r}")
        sentences[label] = text_field(sentence, "sentence")
    if set(sentences) != set(LABELS):
        raise RowProblem("sentences", f"needs one sentence per label {', '.join(LABELS)}")
    return StereoSetItem(
        id=text_field(example, "id"),
        task=task,
        target=text_field(example, "target"),
        bias_type=text_field(example, "bias_type"),
        context=text_field(example, "context"),
        sentences={k: sentences[k] for k in LABELS},
    )
