"""Stage datasets: a built DatasetDict directory (or a builder spec), checked against TRL's formats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignment.errors import SafealignError, where

DatasetKind = Literal["sft", "preference", "prompt"]

# The column sets each kind of stage accepts (TRL's formats; prompt pools for RL), in order of preference.
ACCEPTED_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sft": (("prompt", "completion"), ("messages",), ("text",)),
    "preference": (("prompt", "chosen", "rejected"), ("chosen", "rejected")),
    "prompt": (("prompt",),),
}


@dataclass
class StageData:
    """The train split, the optional eval split, and what the stage records about them."""

    train: Any
    eval: Any | None
    info: dict[str, Any] = field(default_factory=dict)


def _load_dataset_dict(path: Path) -> Any:
    """A data build (checked by the data builders' loader) or any ``save_to_disk`` dataset directory."""
    if (path / "provenance.json").is_file():
        try:
            from data_builders import load_built
        except ImportError:
            load_built = None
        if load_built is not None:
            return load_built(path)
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SafealignError(
            f"{path}: not a saved dataset ({type(exc).__name__}); build one with `safealign data build` "
            "or give a DatasetDict directory with train/test splits"
        ) from exc
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def _provenance(path: Path) -> dict[str, Any]:
    file = path / "provenance.json"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_message_list(value: Any, path: Path, split: str, column: str) -> None:
    if isinstance(value, str):
        return
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )
    if not ok:
        raise SafealignError(
            f"{where(path / split, 0, column)}: expected a string or a list of {{role, content}} messages, "
            f"got {type(value).__name__} {str(value)[:80]!r}"
        )


def check_columns(ds: Any, kind: DatasetKind, path: Path, split: str) -> tuple[str, ...]:
    """The accepted column set ``ds`` provides for ``kind``; a clear error naming the missing column."""
    columns = set(ds.column_names)
    for accepted in ACCEPTED_COLUMNS[kind]:
        if set(accepted) <= columns:
            break
    else:
        first = ACCEPTED_COLUMNS[kind][0]
        missing = next(c for c in first if c not in columns)
        options = " or ".join("+".join(a) for a in ACCEPTED_COLUMNS[kind])
        raise SafealignError(
            f"{where(path / split, field=missing)}: missing column for a {kind} dataset (needs {options}; "
            f"has {', '.join(sorted(columns)) or 'no columns'})"
        )
    if len(ds) == 0:
        raise SafealignError(f"{path / split}: the split is empty; a {kind} stage needs at least one row")
    first_row = ds[0]
    for column in accepted:
        _check_message_list(first_row[column], path, split, column)
    return accepted


def _subset(ds: Any, limit: int | None, seed: int) -> Any:
    if limit is None or limit >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def dataset_strategy(ds: Any, provenance: dict[str, Any]) -> str | None:
    """The builder strategy of a preference set (``parity``, ``less_over_more``, ...) when it is recorded."""
    if "strategy" in ds.column_names:
        values = set(ds.unique("strategy"))
        if len(values) == 1:
            return str(values.pop())
        return "mixed"
    value = provenance.get("strategy")
    return str(value) if isinstance(value, str) else None


def parse_builder_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``builder:KIND?key=value&key=value`` into the kind and its options.

    >>> parse_builder_spec("builder:preference?source=crows_pairs&strategy=parity")
    ('preference', {'source': 'crows_pairs', 'strategy': 'parity'})
    """
    from urllib.parse import parse_qsl

    body = spec.split(":", 1)[1]
    kind, _, query = body.partition("?")
    if not kind:
        raise SafealignError(f"dataset spec {spec!r}: name a builder after 'builder:' (builder:preference)")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise SafealignError(f"dataset spec {spec!r}: options must look like key=value&key=value") from exc
    return kind, options


def build_from_spec(spec: str, target: Path) -> Path:
    """Build a dataset from a builder spec into ``target`` with the data builders.

    The options are ``safealign data build`` keys (``source``, ``strategy``, ``limit``, ...). An output
    that is already up to date (same sources and options) is reused, so a resumed stage trains on the
    same rows.
    """
    from alignment.config import from_dict, parse_yaml

    kind, options = parse_builder_spec(spec)
    try:
        from data_builders.builders import BuildConfig, run_build
    except ImportError as exc:
        raise SafealignError(
            f"dataset spec {spec!r}: the data builders are not available in this install; build the dataset "
            "with `safealign data build` and pass its directory as `dataset`"
        ) from exc
    values = {
        key: parse_yaml(value, f"dataset spec {spec!r}, option {key!r}") if value else None
        for key, value in options.items()
    }
    for reserved in ("kind", "out"):
        if reserved in values:
            raise SafealignError(f"dataset spec {spec!r}: {reserved!r} is set by the stage, leave it out")
    config = from_dict(BuildConfig, {**values, "kind": kind, "out": str(target)}, f"dataset spec {spec!r}")
    run_build(config)
    return target


def load_stage_data(
    dataset: str,
    kind: DatasetKind,
    *,
    train_split: str = "train",
    eval_split: str | None = "test",
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    build_dir: Path | None = None,
) -> StageData:
    """Load and check the train (and eval) split of a built dataset, or build it from a spec first."""
    spec = str(dataset or "").strip()
    if not spec:
        raise SafealignError(
            "no dataset given: set `dataset:` in the recipe (or --dataset) to a built dataset directory "
            "or a builder spec like 'builder:preference'"
        )
    if spec.startswith("builder:"):
        if build_dir is None:
            raise SafealignError(f"dataset spec {spec!r} needs a run directory to build into")
        path = build_from_spec(spec, build_dir)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SafealignError(
                f"dataset {spec}: no such directory; build one with `safealign data build` or use a builder "
                "spec like 'builder:preference'"
            )
    splits = _load_dataset_dict(path)
    if train_split not in splits:
        raise SafealignError(
            f"{path}: no split {train_split!r} (has {', '.join(splits) or 'none'}); set train_split"
        )
    train = splits[train_split]
    columns = check_columns(train, kind, path, train_split)
    eval_ds = None
    eval_note = None
    if eval_split is not None:
        if eval_split in splits and len(splits[eval_split]) > 0:
            eval_ds = splits[eval_split]
            check_columns(eval_ds, kind, path, eval_split)
        else:
            eval_note = f"split {eval_split!r} missing or empty: no held-out evaluation"
    provenance = _provenance(path)
    train = _subset(train, max_train_samples, seed)
    eval_ds = _subset(eval_ds, max_eval_samples, seed) if eval_ds is not None else None
    info: dict[str, Any] = {
        "path": str(path.resolve()),
        "spec": spec,
        "format": "+".join(columns),
        "conversational": not isinstance(train[0][columns[0]], str),
        "train_split": train_split,
        "train_rows": len(train),
        "eval_split": eval_split if eval_ds is not None else None,
        "eval_rows": len(eval_ds) if eval_ds is not None else 0,
        "fingerprint": getattr(train, "_fingerprint", None),
    }
    if eval_note:
        info["eval_note"] = eval_note
    if kind == "preference":
        info["strategy"] = dataset_strategy(train, provenance)
    for key in ("sources", "seed", "split_rule", "strategy"):
        if key in provenance and key not in info:
            info[key] = provenance[key]
    return StageData(train=train, eval=eval_ds, info=info)
