"""``safealign export RUN_DIR [--stage NAME] --out DIR``: a pipeline stage as a Hugging Face model."""

from __future__ import annotations

import argparse

from alignment.console import err


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a stage of a finished pipeline run as a standalone Hugging Face model folder",
        description="Write merged safetensors weights (a LoRA adapter is merged into its base), "
        "the tokenizer with its chat template, a generation config and a README.md model card (license, "
        "base model, datasets, model-index results with their CIs, recipe, data provenance, limitations). "
        "The folder loads with plain transformers; `safealign eval --model DIR` reproduces the run's "
        "numbers.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a completed pipeline run directory")
    parser.add_argument("--stage", default=None, help="stage to export (default: the run's last stage)")
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignment.export import export_stage

    out = export_stage(args.run_dir, args.out, args.stage)
    err.print(f"[green]exported[/] {out} (load with AutoModelForCausalLM.from_pretrained)")
    return 0
