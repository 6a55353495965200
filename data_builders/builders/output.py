"""Write a build atomically (DatasetDict + JSONL mirrors + provenance + card) and load it back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import atomic_dir, atomic_write_text
from data_builders.builders.core import Example, to_jsonl
from data_builders.splits import SPLITS

PROVENANCE = "provenance.json"
CARD_FILES = ("README.md", "dataset_card.md")
AUDIT = "leakage_audit.json"
SPLIT_RULE = (
    "data_builders.splits.assign_split(group, test_fraction, seed, val_fraction): sha256 of (seed, group) "
    "compared with test_fraction (test) and test_fraction + val_fraction (validation); grouped (every row of "
    "a group in one split), the same rule the evaluation uses"
)


def read_provenance(out: Path) -> dict[str, Any] | None:
    """The provenance of an existing build, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((out / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_build(out: Path, splits: dict[str, list[Example]], provenance: dict[str, Any], card: str) -> Path:
    """Write the splits and metadata under a temporary name and move them to ``out`` when complete."""
    import datasets
    from datasets import Dataset, DatasetDict

    rows = {name: [e.columns for e in splits[name]] for name in SPLITS}
    if not any(rows.values()):
        raise SafealignError("the build produced no rows; nothing written")
    # an empty split is left out on disk (datasets cannot reload one) and restored empty by load_built
    dataset = DatasetDict({name: Dataset.from_list(r) for name, r in rows.items() if r})
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        _write(out, dataset, rows, provenance, card)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return out


def _write(out: Path, dataset, rows: dict, provenance: dict[str, Any], card: str) -> None:
    with atomic_dir(out) as tmp:
        dataset.save_to_disk(str(tmp))
        for name in SPLITS:
            atomic_write_text(tmp / f"{name}.jsonl", to_jsonl(rows[name]))
        atomic_write_text(tmp / AUDIT, json.dumps(provenance["leakage_audit"], indent=2) + "\n")
        for card_file in CARD_FILES:
            atomic_write_text(tmp / card_file, card)
        provenance = {**provenance, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(tmp / PROVENANCE, json.dumps(provenance, indent=2, ensure_ascii=False) + "\n")


def load_built(path: str | Path):
    """Load a built ``DatasetDict`` (``train``, ``test``), with a clear error when it is not one."""
    from datasets import Dataset, DatasetDict, load_from_disk

    path = Path(path)
    if not path.is_dir():
        raise SafealignError(f"{path}: no built dataset here (run `safealign data build ... --out {path}`)")
    if read_provenance(path) is None:
        raise SafealignError(
            f"{path}: {PROVENANCE} is missing or unreadable; is this a safealign data build?"
        )
    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SafealignError(f"{path}: the dataset files are missing or corrupt ({exc}); rebuild it") from exc
    if not isinstance(dataset, DatasetDict) or not dataset:
        raise SafealignError(f"{path}: expected a DatasetDict with splits {', '.join(SPLITS)}; rebuild it")
    features = next(iter(dataset.values())).features
    for name in SPLITS:
        if name not in dataset:
            dataset[name] = Dataset.from_dict({c: [] for c in features}, features=features)
    return dataset


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_card(provenance: dict[str, Any], notes: list[str], example: dict[str, Any] | None) -> str:
    """The dataset card (Markdown): what, from where, how split, counts, strategy and caveats."""
    config = provenance["config"]
    rows = provenance["rows"]
    audit = provenance["leakage_audit"]
    conversational = provenance["format"] == "conversational"
    described = "TRL conversational messages" if conversational else "plain strings"
    title = f"safealign {provenance['kind']} dataset from {config['source']}"
    parts = [
        f"# {title}",
        "",
        f"Built by `safealign data build {provenance['kind']}` (safealign "
        f"{provenance['safealign_version']}). Format: {provenance['format']} ({described}); "
        f"columns: {', '.join(provenance['columns'])}.",
        "",
        "## Sources",
        "",
        _table(
            ["source", "file", "sha256", "rows", "license"],
            [
                [s["name"], s["path"], s["sha256"][:16] + "...", s["rows"], s["license"]]
                for s in provenance["sources"]
            ],
        ),
        "",
        "## Strategy and caveats",
        "",
        f"Strategy: **{provenance['strategy']}**. Seed: {config['seed']}. Test fraction: "
        f"{config['test_fraction']}. Validation fraction: {config.get('val_fraction', 0.0)}.",
        "",
        *[f"- {note}" for note in notes],
        "",
        "## Splits",
        "",
        f"Split rule: {SPLIT_RULE}.",
        "",
        _table(["split", "rows"], [[name, rows[name]] for name in SPLITS]),
        "",
        "Rows per bias type / group (realised test fraction; the split is stratified in expectation):",
        "",
        _table(
            ["stratum", "train", "validation", "test", "test fraction"],
            [
                [k, v["train"], v.get("validation", 0), v["test"], v["test_fraction"]]
                for k, v in provenance["strata"].items()
            ],
        ),
        "",
        "## Counts",
        "",
        _table(["count", "value"], [[k, v] for k, v in provenance["counts"].items()]),
        "",
        "## Leakage audit",
        "",
        f"{audit['method']}: {audit['overlap']} shared texts between train and test "
        f"({audit['overlap_before']} before dropping {audit['train_rows_dropped']} train rows).",
    ]
    if provenance["bad_rows"]:
        parts += ["", "## Skipped rows", "", *[f"- {b}" for b in provenance["bad_rows"][:20]]]
        if len(provenance["bad_rows"]) > 20:
            parts.append(f"- ... and {len(provenance['bad_rows']) - 20} more (see {PROVENANCE})")
    if example is not None:
        parts += [
            "",
            "## Example row",
            "",
            "```json",
            json.dumps(example, indent=2, ensure_ascii=False),
            "```",
        ]
    return "\n".join(parts) + "\n"
