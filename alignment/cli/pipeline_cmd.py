"""``safealign pipeline --config recipe.yaml`` and ``safealign report RUN_DIR``."""

from __future__ import annotations

import argparse

from alignment.config import Once


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="build data, evaluate the base model, train and evaluate each stage, write the report",
        description=(
            "Run a pipeline recipe (recipes/<model>/pipeline.yaml). A rerun skips finished work whose config "
            "is unchanged and continues an interrupted stage from its last checkpoint."
        ),
    )
    parser.add_argument("--config", required=True, action=Once, metavar="FILE.yaml", help="pipeline recipe")
    parser.add_argument("--model", help="base model spec (overrides the recipe)")
    parser.add_argument(
        "--name", help="run name, i.e. the folder under SAFEALIGN_RUNS (overrides the recipe)"
    )
    parser.add_argument(
        "--preset", help="evaluation preset: pipeline (the recipe default), quick, standard, full, or a YAML"
    )
    parser.add_argument("--limit", type=int, help="cap every evaluation suite at this many items")
    parser.add_argument(
        "--eval-split",
        choices=("heldout", "validation"),
        help="score the test groups (heldout, for reports) or the validation groups (choosing recipes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of every step (default: $SAFEALIGN_THREADS, else $OMP_NUM_THREADS, else the "
        "CPUs not busy with other work when the step starts)",
    )
    parser.add_argument("--stages", dest="only", metavar="A,B", help="run only these stages of the recipe")
    parser.add_argument("--seed", type=int, help="seed for training and evaluation")
    parser.add_argument(
        "--runs-dir", help="parent folder of run directories (default: $SAFEALIGN_RUNS or ./runs)"
    )
    parser.add_argument(
        "--force", action="store_true", help="redo every step even when its outputs are current"
    )
    parser.set_defaults(func=run_pipeline)

    report = subparsers.add_parser("report", help="rebuild a pipeline run's report from its saved outputs")
    report.add_argument("run_dir", help="the pipeline's run directory (runs/<name>)")
    report.set_defaults(func=run_report)


def run_pipeline(args: argparse.Namespace) -> int:
    from alignment.pipeline import Pipeline, load_pipeline

    keys = ("model", "name", "preset", "limit", "eval_split", "only", "seed")
    cfg = load_pipeline(args.config, {k: getattr(args, k) for k in keys})
    Pipeline(cfg, root=args.runs_dir, force=args.force, source=args.config, threads=args.threads).run()
    return 0


def run_report(args: argparse.Namespace) -> int:
    from alignment.console import out
    from alignment.pipeline import rebuild_report
    from alignment.report import print_report

    report = rebuild_report(args.run_dir)
    print_report(report)
    out.print(f"report written to {args.run_dir}/report.md and report.html")
    return 0
