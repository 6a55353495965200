"""``safealign train STAGE --config recipe.yaml [--flag value ...]``: run one training stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from alignment.console import out
from alignment.stages.registry import STAGES, stage_entry

DESCRIPTION = """\
Train one stage. Settings come from the recipe (--config) and are overridden by flags named like its
keys, e.g. `safealign train dpo --config recipes/smollm2-135m-instruct/dpo-quick.yaml --beta 0.2`.
`safealign train sft --help` lists every key. A finished stage is skipped (--force retrains); an
interrupted one continues with --resume. Multi-GPU: `accelerate launch --config_file
recipes/accelerate/ddp.yaml -m alignment train sft ...` (see docs/recipes.md).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help=f"run a training stage ({', '.join(STAGES)}) from a YAML recipe and flags",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=STAGES, help="which stage to run")
    parser.add_argument(
        "options", nargs=argparse.REMAINDER, help="--config FILE.yaml and --key value overrides"
    )
    parser.set_defaults(func=run)


def summary_table(stage_file: Path) -> Table:
    """A rich table of what a finished stage recorded."""
    record = json.loads(stage_file.read_text(encoding="utf-8"))
    metrics = record.get("metrics", {})
    table = Table(title=f"{record.get('stage', '?')} stage: {stage_file.parent}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    model = record.get("model", {})
    table.add_row("model", f"{model.get('path', '')} ({model.get('saved_as', '?')})")
    steps = record.get("steps", {})
    resumed = steps.get("resumed_from_step")
    table.add_row("steps", f"{steps.get('global_step')}" + (f" (resumed from {resumed})" if resumed else ""))
    shown = (
        "first_logged_loss",
        "last_logged_loss",
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
        "reward_start",
        "reward_end",
        "kl_start",
        "kl_end",
        "eval_reward_start",
        "eval_reward_end",
        "eval_kl_end",
    )
    for key in shown:
        if isinstance(metrics.get(key), (int, float)):
            table.add_row(key, f"{metrics[key]:.4f}")
    data = record.get("dataset", {})
    table.add_row(
        "data", f"{data.get('train_rows')} train / {data.get('eval_rows')} eval rows from {data.get('path')}"
    )
    table.add_row(
        "precision",
        f"{record.get('precision', {}).get('name')} on {record.get('precision', {}).get('device')}",
    )
    table.add_row("wall time", f"{record.get('wall_time_s', 0):.1f} s")
    step_time = record.get("step_time", {})
    if step_time.get("n"):
        table.add_row("step time", f"median {step_time['median_s']:.3f} s over {step_time['n']} steps")
    memory = record.get("peak_memory", {})
    table.add_row("peak memory", ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    return table


def run(args: argparse.Namespace) -> int:
    from alignment.config import parse_config

    config_cls, run_stage = stage_entry(args.stage)
    (config,) = parse_config(
        config_cls,
        args.options,
        prog=f"safealign train {args.stage}",
        description=f"Train the {args.stage} stage. Keys of a recipe file and flags are the same names.",
    )
    model_dir = run_stage(config)
    stage_file = Path(model_dir).parent / "stage.json"
    if stage_file.is_file():
        from accelerate import PartialState

        if PartialState().is_main_process:
            out.print(summary_table(stage_file))
    return 0
