"""``safealign models list`` and ``safealign models prepare``."""

from __future__ import annotations

import argparse

from rich.table import Table

from alignment.console import err, out
from alignment.models import ALIASES, PACKAGED, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and prepare the built-in and packaged models")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="show model aliases and packaged models with their install/cache state")
    lst.set_defaults(func=list_models)
    prep = sub.add_parser("prepare", help="build a built-in alias into the cache now (e.g. convert SmolLM2)")
    prep.add_argument(
        "names", nargs="+", metavar="ALIAS", help="aliases to build, e.g. smollm2-135m-instruct"
    )
    prep.set_defaults(func=prepare)


def _alias_state(alias) -> str:
    if alias.hub_id:
        return "[cyan]hub[/]: downloaded on first use"
    asset = PACKAGED.get(alias.name)
    if asset is not None and asset.locate() is None and not alias.is_cached():
        return f"[red]not installed[/]: {asset.install_hint()}"
    if alias.is_cached():
        return "[green]ready[/]"
    return "[yellow]converted on first use[/]" if asset else "[yellow]built on first use[/]"


def list_models(args: argparse.Namespace) -> int:
    table = Table(title="Causal language models (use with --model)")
    for column in ("alias", "source", "state", "description"):
        table.add_column(column)
    for alias in ALIASES.values():
        source = alias.hub_id or (f"pip: {alias.package}" if alias.package else "built locally")
        table.add_row(alias.name, source, _alias_state(alias), alias.description)
    out.print(table)

    assets = Table(title="Packaged scorers and encoders (used by the reward module)")
    for column in ("name", "kind", "package", "state", "path"):
        assets.add_column(column)
    for asset in PACKAGED.values():
        if asset.kind == "causal-lm":
            continue
        path = asset.locate()
        state = "[green]installed[/]" if path else f"[red]missing[/]: {asset.install_hint()}"
        assets.add_row(asset.name, asset.kind, asset.package, state, str(path or ""))
    out.print(assets)
    return 0


def prepare(args: argparse.Namespace) -> int:
    for name in args.names:
        with err.status(f"preparing {name} ..."):
            source = resolve_model(name)
        if source.kind == "hub":
            out.print(f"{name}: hub model {source.path}, downloaded by the first command that loads it")
        else:
            out.print(f"{name}: [green]ready[/] at {source.path}")
    return 0
