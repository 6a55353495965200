"""``safealign eval``: bias and knowledge-retention suites on one model, a rich table and results.json."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from rich.table import Table

from alignment.config import Once, add_dataclass_flags, config_from_args
from alignment.console import err, out
from alignment.evaluation.config import EvalConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on bias and knowledge-retention suites",
        description="Run evaluation suites on a model and write results.json (see docs/metrics.md). "
        "Without --suites, the preset's suites run; those missing a prerequisite (a base model, a trained "
        "stereotype classifier) are skipped with the reason recorded.",
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model spec (default: %(default)s)")
    parser.add_argument(
        "--config",
        action=Once,
        metavar="FILE.yaml",
        help="YAML file of evaluation settings (keys: the flags below)",
    )
    add_dataclass_flags(parser, EvalConfig)
    parser.add_argument("--out", default=None, help="output folder (default: runs/eval-<model>-<preset>)")
    parser.add_argument(
        "--no-samples", action="store_true", help="do not write per-item samples/<suite>.jsonl"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into --out even when it holds something other than an eval run",
    )
    parser.add_argument("--list", action="store_true", help="list suites and presets, then exit")
    parser.set_defaults(func=run)


def _default_out(model: str, preset: str) -> Path:
    from alignment.paths import runs_dir

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name or model).strip("-.") or "model"
    return runs_dir() / f"eval-{slug}-{Path(preset).stem}"


def list_suites() -> int:
    from alignment.evaluation.presets import builtin_presets
    from alignment.evaluation.registry import load_suites

    table = Table(title="Evaluation suites (safealign eval --suites ...)")
    for column in ("suite", "kind", "metrics (headline in bold)", "needs", "split"):
        table.add_column(column)
    for spec in load_suites().values():
        metrics = ", ".join(f"[bold]{m}[/]" if info.headline else m for m, info in spec.metrics.items())
        split = "held-out part" if spec.training_source else "all"
        table.add_row(spec.name, spec.kind, metrics, ", ".join(spec.requires) or "-", split)
    out.print(table)
    presets = Table(title="Presets (--preset)")
    presets.add_column("preset")
    presets.add_column("description")
    for preset in builtin_presets().values():
        presets.add_row(preset.name, preset.description)
    out.print(presets)
    return 0


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return text + ("%" if unit == "%" else "")


def results_table(results: dict) -> Table:
    """The overall rows of every suite: value, 95% CI, n, ideal and split."""
    table = Table(title=f"{results['model']['spec']} - preset {results['preset']}, seed {results['seed']}")
    for column in ("suite", "metric", "value", "95% CI", "n", "ideal", "split"):
        table.add_column(column, justify="right" if column in ("value", "95% CI", "n", "ideal") else "left")
    for row in results["metrics"]:
        if row["group"] is not None:
            continue
        ci = "" if row["ci95"] is None else f"[{_fmt(row['ci95'][0])}, {_fmt(row['ci95'][1])}]"
        ideal = "" if row["ideal"] is None else _fmt(row["ideal"])
        metric = f"[bold]{row['metric']}[/]" if row["headline"] else row["metric"]
        table.add_row(
            row["suite"],
            metric,
            _fmt(row["value"], row.get("unit", "")),
            ci,
            str(row["n"]),
            ideal,
            row["split"],
        )
    for name, entry in results["suites"].items():
        if entry["status"] == "skipped":
            table.add_row(name, "[yellow]skipped[/]", "", "", "", "", entry["reason"])
    return table


def run(args: argparse.Namespace) -> int:
    if args.list:
        return list_suites()
    from alignment.evaluation.runner import execute, plan_evaluation
    from alignment.runs import check_run_name, claim_output_dir, run_context

    # Everything checkable (preset, suites, data files, prerequisites, model spec) fails here, before
    # any folder is created.
    config = config_from_args(EvalConfig, args)
    out_dir = Path(args.out) if args.out else _default_out(args.model, config.preset)
    check_run_name(out_dir.name)
    claim_output_dir(out_dir, "eval", force=args.force)  # a folder of other files is never written into
    plan = plan_evaluation(args.model, config)
    with run_context(
        out_dir.name,
        command=sys.argv,
        config={"model": args.model, **dataclasses.asdict(config)},
        seed=config.seed,
        root=out_dir.parent,
        kind="eval",
        force=args.force,
        discard_on_input_error=True,  # data or model problems found while loading leave no trace
    ) as run_:
        results = execute(plan, out_dir=out_dir, write_samples=not args.no_samples, progress=True)
        run_.update(
            results_file="results.json",
            suites={n: e["status"] for n, e in results["suites"].items()},
            timings=results["timings"],
        )
    out.print(results_table(results))
    err.print(f"[dim]results: {out_dir / 'results.json'} (total {results['timings']['total_s']:.1f}s)[/]")
    return 0
