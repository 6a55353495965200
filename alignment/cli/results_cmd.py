"""``safealign results --config ablation.yaml``: run an ablation of pipeline recipes and summarise it."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "results",
        help="run an ablation of pipeline recipes; write <out>.md, <out>.json and a bias-vs-retention plot",
        description=(
            "Run every recipe of an ablation file (recipes/<model>/ablation.yaml) as a pipeline, then write "
            "one table of each recipe's changes from the base model (paired CIs), a JSON record and a "
            "bias-vs-retention plot. A rerun skips finished work; the base evaluation is done once. "
            "Choose a recipe on --split validation; report it once on --split heldout (see docs/results.md)."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE.yaml", help="ablation file")
    parser.add_argument(
        "--split",
        choices=("validation", "heldout"),
        help="evaluate on the validation groups or the test groups (default: the file's `split`)",
    )
    parser.add_argument("--model", help="base model of every recipe (overrides the pipeline recipe's)")
    parser.add_argument("--limit", type=int, help="cap every evaluation suite at N items (smoke runs)")
    parser.add_argument(
        "--out", help="output prefix: writes OUT.md, OUT.json, OUT.png (default: the file's `out`)"
    )
    parser.add_argument(
        "--runs-dir", help="parent folder of run directories (default: $SAFEALIGN_RUNS or ./runs)"
    )
    parser.add_argument("--threads", type=int, help="torch threads of every step (see `safealign pipeline`)")
    parser.add_argument(
        "--recipes",
        metavar="A,B",
        help="run and summarise only these recipes of the ablation file (in its order)",
    )
    parser.add_argument("--force", action="store_true", help="redo every step of every recipe")
    parser.set_defaults(func=run_results)


def run_results(args: argparse.Namespace) -> int:
    from alignment.console import out
    from alignment.results import Ablation

    ablation = Ablation(
        args.config,
        args.split,
        args.runs_dir,
        model=args.model,
        out=args.out,
        limit=args.limit,
        only=[r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes else None,
        force=args.force,
        threads=args.threads,
    )
    ablation.run()
    out.print(f"results written to {ablation.cfg.out}.md, .json and .png")
    return 0
