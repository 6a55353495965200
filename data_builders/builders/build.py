"""Run a build end to end: load and validate, split by group, augment, audit, render, write atomically."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from alignment import __version__
from alignment.errors import SafealignError
from alignment.io import sha256_json
from data_builders.builders.config import BuildConfig
from data_builders.builders.core import (
    Built,
    augment_examples,
    leakage_audit,
    render_with_chat_template,
    split_examples,
    stratum_table,
)
from data_builders.builders.output import SPLIT_RULE, read_provenance, render_card, write_build
from data_builders.builders.pairs import (
    build_crows_preference,
    build_crows_sft,
    build_rewrite_preference,
    build_rewrite_sft,
)
from data_builders.builders.prompts import build_prompts
from data_builders.splits import SPLITS

BUILDER_VERSION = 1
BUILDERS = {
    ("sft", "crows_pairs"): build_crows_sft,
    ("sft", "rewrite_pairs"): build_rewrite_sft,
    ("preference", "crows_pairs"): build_crows_preference,
    ("preference", "rewrite_pairs"): build_rewrite_preference,
}
COMPLETION_COLUMNS = {"sft": ("completion",), "preference": ("chosen", "rejected"), "prompts": ()}


@dataclasses.dataclass
class BuildResult:
    """Where a build went, whether it was rebuilt, and its provenance record."""

    out: Path
    rebuilt: bool
    provenance: dict[str, Any]


def collect(config: BuildConfig) -> Built:
    """Load the sources and make the rows (no splitting or writing yet)."""
    if config.kind == "prompts":
        return build_prompts(config)
    return BUILDERS[(config.kind, config.source)](config)


def fingerprint(config: BuildConfig, built: Built) -> str:
    """Hash of all that determines the output: config (less out/force), source hashes, builder version."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "force")}
    return sha256_json(
        {"config": settings, "sources": [s.sha256 for s in built.sources], "builder_version": BUILDER_VERSION}
    )


def run_build(config: BuildConfig) -> BuildResult:
    """Build ``config.kind`` into ``config.out``; an up-to-date output (same fingerprint) is left as is.

    Bad input raises :class:`~alignment.errors.SafealignError` before anything is written; the output
    directory appears only when complete, so an interrupted build can simply be run again.
    """
    out = Path(config.out)
    built = collect(config)
    digest = fingerprint(config, built)
    previous = read_provenance(out)
    if previous is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SafealignError(f"{out}: exists and is not a safealign data build; choose another --out")
    if previous and previous.get("fingerprint") == digest and not config.force:
        return BuildResult(out, rebuilt=False, provenance=previous)

    splits = split_examples(built.examples, config.test_fraction, config.seed, config.val_fraction)
    if config.augment:
        text_columns = ("prompt", *COMPLETION_COLUMNS[config.kind])
        copies = augment_examples(splits["train"], config.augment, text_columns)
        built.counts["augmented_train_rows"] = len(copies)
        splits["train"] = splits["train"] + copies
        built.notes.append(
            f"Counterfactual augmentation ({', '.join(config.augment)}): train rows that mention listed "
            "group "
            "words get a copy with the words swapped (column augmented); test rows are left as written."
        )
    audit, splits["train"] = leakage_audit(splits)
    built.counts["leaked_train_rows_dropped"] = audit["train_rows_dropped"]
    tokenizer = None
    if config.chat_template:
        tokenizer = render_with_chat_template(
            [e for rows in splits.values() for e in rows],
            config.chat_template,
            COMPLETION_COLUMNS[config.kind],
        )
        built.format = "standard (rendered)"
        built.notes.append(
            f"Rows rendered to plain strings with the chat template of {config.chat_template}."
        )
    first = next((e.columns for name in SPLITS for e in splits[name]), None)
    provenance = {
        "kind": config.kind,
        "safealign_version": __version__,
        "builder_version": BUILDER_VERSION,
        "fingerprint": digest,
        "config": dataclasses.asdict(config),
        "format": built.format,
        "strategy": built.strategy,
        "chat_template": tokenizer,
        "columns": list(first) if first else [],
        "sources": [dataclasses.asdict(s) for s in built.sources],
        "split_rule": SPLIT_RULE,
        "rows": {name: len(rows) for name, rows in splits.items()},
        "strata": stratum_table(splits),
        "counts": built.counts,
        "leakage_audit": audit,
        "bad_rows": [str(b) for b in built.bad_rows],
    }
    card = render_card(provenance, built.notes, first)
    write_build(out, splits, provenance, card)
    return BuildResult(out, rebuilt=True, provenance=read_provenance(out) or provenance)
