"""``safealign env``: versions, device, offline state, folders and packaged models at a glance."""

from __future__ import annotations

import argparse
import json
import os

from rich.table import Table

from alignment.console import out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env", help="show versions, device, offline state, folders and packaged models"
    )
    parser.add_argument("--json", action="store_true", help="print the same facts as JSON")
    parser.set_defaults(func=run)


def collect() -> dict:
    """The environment facts that ``safealign env`` shows."""
    from alignment.device import describe_device
    from alignment.models import ALIASES, PACKAGED
    from alignment.paths import cache_dir, is_offline, runs_dir
    from alignment.runs import package_versions

    data_env = os.environ.get("SAFEALIGN_DATA_DIR")
    datasets = (
        sorted(p.name for p in __import__("pathlib").Path(data_env).iterdir() if p.is_dir())
        if (data_env and os.path.isdir(data_env))
        else []
    )
    return {
        "versions": package_versions(),
        "device": describe_device(),
        "offline": is_offline(),
        "cache_dir": str(cache_dir()),
        "data_dir": data_env,
        "data_dir_exists": bool(data_env and os.path.isdir(data_env)),
        "datasets": datasets,
        "runs_dir": str(runs_dir()),
        "packaged": {
            name: {"package": a.package, "version": a.installed_version(), "path": str(a.locate() or "")}
            for name, a in PACKAGED.items()
        },
        "cached_models": {name: a.is_cached() for name, a in ALIASES.items() if a.cache_path},
    }


def run(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    table = Table(title="safealign environment", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, version in facts["versions"].items():
        table.add_row(name, version)
    device = facts["device"]
    table.add_row(
        "device",
        f"{device['device']} ({device['torch_threads']} threads)"
        + (f", {', '.join(device['cuda_devices'])}" if device.get("cuda_devices") else ""),
    )
    table.add_row("hub", "[yellow]offline[/] (HF_HUB_OFFLINE)" if facts["offline"] else "online")
    table.add_row("cache (SAFEALIGN_CACHE)", facts["cache_dir"])
    data = facts["data_dir"]
    if not data:
        table.add_row(
            "data (SAFEALIGN_DATA_DIR)", "[yellow]not set[/]: suites download into the cache when online"
        )
    else:
        state = ", ".join(facts["datasets"]) if facts["data_dir_exists"] else "[red]missing[/]"
        table.add_row("data (SAFEALIGN_DATA_DIR)", f"{data}: {state}")
    table.add_row("runs (SAFEALIGN_RUNS)", facts["runs_dir"])
    for name, info in facts["packaged"].items():
        state = (
            f"[green]{info['version']}[/]" if info["path"] else f"[red]not installed[/] ({info['package']})"
        )
        cached = facts["cached_models"].get(name)
        if cached is not None and info["path"]:
            state += ", converted" if cached else ", not converted yet"
        table.add_row(f"packaged: {name}", state)
    out.print(table)
    return 0
