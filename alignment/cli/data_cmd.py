"""``safealign data build|inspect|sources``: build SFT, preference and prompt datasets and look at them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from alignment.config import Once, add_dataclass_flags, config_from_args
from alignment.console import err, out
from alignment.errors import SafealignError

KIND_HELP = "sft (rewrite instructions), preference (prompt/chosen/rejected) or prompts (RL prompt pool)"


def _config_type():
    from data_builders.builders import BuildConfig

    return BuildConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="build and inspect training datasets (SFT, preference, prompts)"
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = sub.add_parser(
        "build",
        help="build a dataset from a source into a directory",
        description="Build a dataset with grouped train/test splits, a leakage audit, provenance.json and a "
        "dataset card. Bad rows stop the build with an error naming file, row and field (exit 2) unless "
        "--on-bad-row skip. See docs/data.md.",
    )
    build.add_argument("kind", choices=("sft", "preference", "prompts"), help=KIND_HELP)
    build.add_argument(
        "--config", action=Once, metavar="FILE.yaml", help="YAML file whose keys are the options below"
    )
    add_dataclass_flags(build, _config_type(), skip=("kind",))
    build.set_defaults(func=run_build_command)

    inspect = sub.add_parser(
        "inspect", help="show the splits, counts, audit and example rows of a built dataset"
    )
    inspect.add_argument("dir", help="a directory written by `safealign data build`")
    inspect.add_argument("--examples", type=int, default=2, help="example rows to show per split")
    inspect.set_defaults(func=run_inspect)

    sources = sub.add_parser("sources", help="list the data files safealign knows and where each resolves")
    sources.set_defaults(func=run_sources)


def build_config(args: argparse.Namespace):
    """Defaults < YAML file < flags, validated into a BuildConfig (errors name the file or flag)."""
    return config_from_args(_config_type(), args, kind=args.kind)


def run_build_command(args: argparse.Namespace) -> int:
    from data_builders.builders import run_build

    config = build_config(args)
    with err.status(f"building {config.kind} data from {config.source} ..."):
        result = run_build(config)
    provenance = result.provenance
    if not result.rebuilt:
        out.print(f"[green]up to date[/]: {result.out} (same sources and options; pass --force to rebuild)")
    _summary(result.out, provenance)
    return 0


def _summary(path: Path, provenance: dict[str, Any]) -> None:
    table = Table(title=f"{provenance['kind']} dataset: {path}")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    table.add_row("strategy", str(provenance["strategy"]))
    table.add_row("format", str(provenance["format"]))
    for name, count in provenance["rows"].items():
        table.add_row(f"rows: {name}", str(count))
    for name, count in provenance["counts"].items():
        table.add_row(name, str(count))
    audit = provenance["leakage_audit"]
    colour = "green" if audit["overlap"] == 0 else "red"
    table.add_row("leakage (train/test shared texts)", f"[{colour}]{audit['overlap']}[/]")
    out.print(table)


def _short(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def run_inspect(args: argparse.Namespace) -> int:
    from data_builders.builders import load_built
    from data_builders.builders.output import read_provenance

    if args.examples < 0:
        raise SafealignError(f"--examples must be 0 or more, got {args.examples}")
    dataset = load_built(args.dir)
    provenance = read_provenance(Path(args.dir)) or {}
    _summary(Path(args.dir), provenance)
    strata = Table(title="rows per stratum")
    for column in ("stratum", "train", "validation", "test", "test fraction"):
        strata.add_column(column)
    for name, counts in provenance.get("strata", {}).items():
        cells = (counts["train"], counts.get("validation", 0), counts["test"], counts["test_fraction"])
        strata.add_row(name, *map(str, cells))
    out.print(strata)
    for split in ("train", "validation", "test"):
        rows = dataset[split]
        if not len(rows) or not args.examples:
            continue
        for index, row in enumerate(rows.select(range(min(args.examples, len(rows))))):
            example = Table(
                title=f"{split} row {index + 1} of {len(rows)}", show_header=False, show_lines=True
            )
            example.add_column("column", style="bold")
            example.add_column("value", overflow="fold")
            for column in rows.column_names:
                example.add_row(column, _short(row[column], 400))
            out.print(example)
    return 0


def run_sources(args: argparse.Namespace) -> int:
    from alignment.paths import data_dir
    from data_builders.sources import known_files
    from data_builders.sources.resolve import data_cache_dir

    table = Table(
        title="data files (resolution: explicit path > SAFEALIGN_DATA_DIR > cache > checked download)"
    )
    for column in ("file", "license", "found at"):
        table.add_column(column, overflow="fold")
    root = data_dir()
    for relative, known in known_files().items():
        candidates = ([root / relative] if root else []) + [data_cache_dir() / relative]
        local = next((p for p in candidates if p.is_file()), None)
        where = str(local) if local else f"[yellow]not local[/]: downloaded on first use from {known.url}"
        table.add_row(relative, known.license, where)
    out.print(table)
    return 0
