"""SFT and DPO step time: safealign's stage next to a bare TRL script doing the same work.

``python -m bench.stages`` (``make bench-stages``). Both sides train the same model from the same saved
checkpoint, on the same synthetic dataset, with the same batch size, sequence length, learning rate,
seed, number of steps and adapter (full or LoRA). *ours* is ``run_sft`` / ``run_dpo`` (run directory,
checks, progress, ``stage.json``, saved model); *bare* is ``SFTTrainer`` / ``DPOTrainer`` built directly
with the CPU settings every TRL script needs (no bf16, no activation checkpointing, no saving, no bar).

Every optimizer step is timed by the same callback on both sides, so model loading and saving are left
out; the first step of each run is a warm-up and not counted. The runs alternate (ours, bare, ours,
bare, ...) so a change in machine load hits both. The wall time of each whole run (load, train, save)
is recorded too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from alignment.models.builtin import TINY_SUBJECTS as SUBJECTS  # words the data is built from
from bench.record import cli_main, finish, make_record, ratio, summarize


def _turn(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def write_datasets(root: Path, rows: int = 256) -> dict[str, str]:
    """A conversational SFT set, a preference set and a prompt pool (for PPO), ``rows`` rows each, as
    ``save_to_disk`` folders with a train split; returns their paths by stage."""
    from datasets import Dataset, DatasetDict

    sft, pref = [], []
    for i in range(rows):
        subject = SUBJECTS[i % len(SUBJECTS)]
        prompt = _turn(
            "user", f"Rewrite without bias: {subject} from flat {i} is always late and never does the work."
        )
        sft.append(
            {
                "prompt": prompt,
                "completion": _turn(
                    "assistant", f"{subject.capitalize()} from flat {i} was late to the meeting this week."
                ),
            }
        )
        pref.append(
            {
                "prompt": _turn("user", f"What do you think about {subject} who lives in flat {i}?"),
                "chosen": _turn(
                    "assistant", f"I do not know {subject} in flat {i}; everyone deserves respect."
                ),
                "rejected": _turn(
                    "assistant", f"People like {subject} in flat {i} are lazy and cannot be trusted."
                ),
            }
        )
    prompts = [
        {"prompt": f"Tell me something about {SUBJECTS[i % len(SUBJECTS)]} ({i})."} for i in range(rows)
    ]
    paths = {"sft": root / "sft", "dpo": root / "preference", "ppo": root / "prompts"}
    for stage, table in (("sft", sft), ("dpo", pref), ("ppo", prompts)):
        DatasetDict(train=Dataset.from_list(table)).save_to_disk(str(paths[stage]))
    return {k: str(v) for k, v in paths.items()}


def ours(stage: str, model: str, dataset: str, out: Path, settings: dict[str, Any]) -> list[float]:
    """Run the safealign stage; returns its per-step durations."""
    from alignment.stages.progress import collecting_step_times

    with collecting_step_times() as recorded:
        if stage == "sft":
            from alignment.stages.sft import SFTStageConfig, run_sft

            run_sft(SFTStageConfig(model=model, dataset=dataset, eval_split="none", **settings), out)
        else:
            from alignment.stages.dpo import DPOStageConfig, run_dpo

            config = DPOStageConfig(
                model=model, dataset=dataset, eval_split="none", loss_type="sigmoid", beta=0.1, **settings
            )
            run_dpo(config, out)
    return recorded[-1]


def bare(stage: str, model: str, dataset: str, out: Path, settings: dict[str, Any]) -> list[float]:
    """The same training as a minimal TRL script; returns its per-step durations."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from alignment.models import resolve_model
    from alignment.stages.progress import StepRecorder

    path = resolve_model(model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = settings["adapter"] == "lora"
    peft_config = (
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
        if lora
        else None
    )
    args = dict(
        output_dir=str(out),
        learning_rate=settings["learning_rate"],
        per_device_train_batch_size=settings["per_device_train_batch_size"],
        max_steps=settings["max_steps"],
        max_length=settings["max_length"],
        logging_steps=settings["logging_steps"],
        seed=settings["seed"],
        bf16=False,
        activation_checkpointing=False,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    timer = StepRecorder()
    train = load_from_disk(dataset)["train"]
    common = dict(train_dataset=train, processing_class=tokenizer, peft_config=peft_config, callbacks=[timer])
    if stage == "sft":
        trainer = SFTTrainer(model=policy, args=SFTConfig(**args), **common)
    else:
        reference = None if lora else AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        config = DPOConfig(**args, beta=0.1, loss_type=["sigmoid"])
        trainer = DPOTrainer(model=policy, ref_model=reference, args=config, **common)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the stage removes it too
    trainer.train()
    return timer.durations


def run_benchmark(
    model: str = "smollm2-135m-instruct",
    *,
    stages: tuple[str, ...] = ("sft", "dpo"),
    adapter: str = "full",
    runs: int = 3,
    steps: int = 5,
    batch_size: int = 4,
    max_length: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``stages`` benchmark record: s/step of ours and bare per stage, and the ratio ours / bare."""
    settings = {
        "adapter": adapter,
        "learning_rate": 1e-5,
        "per_device_train_batch_size": batch_size,
        "max_steps": steps,
        "max_length": max_length,
        "logging_steps": 1,
        "seed": seed,
    }
    ours_settings = {**settings, "save_steps": steps + 1, "save_total_limit": 1}
    variants: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        root = Path(tmp)
        data = write_datasets(root / "data")
        for stage in stages:
            times: dict[str, list[float]] = {"ours": [], "bare": []}
            per_run: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
            for i in range(runs):
                for side, fn in (("ours", ours), ("bare", bare)):
                    start = time.perf_counter()
                    durations = fn(
                        stage,
                        model,
                        data[stage],
                        root / f"{stage}-{side}-{i}",
                        ours_settings if side == "ours" else settings,
                    )
                    wall = time.perf_counter() - start
                    timed = durations[1:]
                    times[side].extend(timed)
                    per_run[side].append(
                        {
                            "median_step_s": summarize(timed)["median"],
                            "first_step_s": round(durations[0], 4),
                            "wall_s": round(wall, 2),
                            "steps_s": round(sum(durations), 2),
                        }
                    )
            for side in ("ours", "bare"):
                variants[f"{stage}/{side}"] = summarize(times[side])
            ratios[f"{stage}: ours / bare"] = ratio(variants[f"{stage}/ours"], variants[f"{stage}/bare"])
            details[stage] = per_run
    return make_record(
        "stages",
        variants,
        n=runs * (steps - 1),
        unit="s/step",
        ratios=ratios,
        params={
            "model": model,
            "runs_per_side": runs,
            "steps_per_run": steps,
            "timed_steps_per_run": steps - 1,
            "batch_size": batch_size,
            "max_length": max_length,
            "adapter": adapter,
            "learning_rate": settings["learning_rate"],
            "seed": seed,
            "dataset": "synthetic, 256 chat rows (SFT prompt/completion; DPO prompt/chosen/rejected)",
            "dpo": {
                "loss_type": "sigmoid",
                "beta": 0.1,
                "reference": "copy from disk (full) / adapter off (LoRA)",
            },
        },
        details={"per_run": details},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--stages", default="sft,dpo")
    parser.add_argument("--adapter", choices=("full", "lora"), default="full")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per side, alternating (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=5, help="optimizer steps per run; the first is not timed"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="JSON record path (default: bench/results/stages.json)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    record = run_benchmark(
        args.model,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        adapter=args.adapter,
        runs=args.runs,
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    title = f"SFT/DPO step time, safealign stage vs bare TRL: {args.model} ({args.adapter})"
    finish(record, args.out, title=title)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "stages"))
