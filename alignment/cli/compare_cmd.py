"""``safealign compare``: the pipeline's paired report for evaluations made with ``safealign eval``.

Recipes are chosen by training several candidates and evaluating each on the same items; this command
puts those evaluations side by side, the first one as the base, with every change paired item by item
(McNemar or paired bootstrap, Holm across each column's bias measures), exactly as a pipeline report.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from alignment.errors import SafealignError

KIND = "compare"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="paired comparison report of evaluations (the first is the base)",
        description="Compare evaluation folders (safealign eval --out DIR) on their shared items: the "
        "first NAME=DIR is the base, every other one a column with paired changes from it.",
    )
    parser.add_argument(
        "evals", nargs="+", metavar="NAME=DIR", help="column name and eval folder; the first is the base"
    )
    parser.add_argument("--out", required=True, help="folder for report.md, report.html and metrics.json")
    parser.add_argument("--name", default=None, help="report title (default: the --out folder's name)")
    parser.add_argument("--force", action="store_true", help="write into a folder that is not a compare run")
    parser.set_defaults(func=run)


def parse_evals(items: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` arguments in order, checked: two or more, unique names, folders with results.

    >>> list(parse_evals(["base=/a", "dpo=/b"]))
    ['base', 'dpo']
    """
    evals: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not folder or not NAME.match(name):
            raise SafealignError(f"{item!r}: expected NAME=DIR with NAME made of letters, digits, - and _")
        if name in evals:
            raise SafealignError(f"{name!r} is given twice; every column needs its own name")
        evals[name] = Path(folder)
    if len(evals) < 2:
        raise SafealignError("compare needs a base and at least one other evaluation (NAME=DIR NAME=DIR ...)")
    return evals


def run(args: argparse.Namespace) -> int:
    from alignment.console import out
    from alignment.evaluation.paired import load_samples
    from alignment.evaluation.results import load_results
    from alignment.report import ReportConfig, print_report, write_report
    from alignment.runs import run_context

    evals = parse_evals(args.evals)
    results = {name: load_results(folder) for name, folder in evals.items()}
    samples = {name: load_samples(folder) for name, folder in evals.items()}
    out_dir = Path(args.out)
    with run_context(
        out_dir.name,
        command=sys.argv,
        config={"evaluations": {name: str(folder) for name, folder in evals.items()}},
        root=out_dir.parent,
        kind=KIND,
        force=args.force,
    ):
        report = write_report(
            out_dir,
            args.name or out_dir.name,
            results,
            {name: None for name in evals},
            {"evaluations": {name: str(folder.resolve()) for name, folder in evals.items()}},
            ReportConfig(),
            samples,
        )
    print_report(report)
    out.print(f"report written to {out_dir}/report.md and report.html")
    return 0
