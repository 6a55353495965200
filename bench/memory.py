"""Peak memory (RSS) of each training stage, full fine-tuning vs LoRA, and of a short pipeline run.

``python -m bench.memory`` (``make bench-memory``). Every measurement runs in a fresh process, and its
peak resident set size is read from the kernel when the process ends (``os.wait4``: its ``ru_maxrss``,
including anything it waited for; it is started from a small launcher so that the benchmark's own
memory never counts). Measured:

* ``load``: start Python, import the stack and load the model, nothing else (the floor);
* ``sft|dpo|ppo / full|lora``: the stage (``run_sft``, ``run_dpo``, ``run_ppo``) for a few steps on
  synthetic data with the default pipeline recipe's batch sizes (SFT 8, DPO 8, PPO 16 rollouts of 24
  tokens in minibatches of 8, the cheap ``non_empty`` reward); DPO's full reference is a second copy
  loaded from disk, LoRA's is the adapter switched off;
* ``pipeline``: ``safealign pipeline`` with the default recipe (SmolLM2 SFT -> DPO -> PPO, the
  stereotype classifier, the composite reward) cut to a few steps per stage and ``--limit`` items per
  evaluation suite (needs ``SAFEALIGN_DATA_DIR``; left out without it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.record import cli_main, finish, make_record, ratio, summarize

STAGE_SETTINGS: dict[str, dict[str, Any]] = {
    "sft": {"per_device_train_batch_size": 8, "max_length": 256},
    "dpo": {"per_device_train_batch_size": 8, "max_length": 128, "loss_type": "sigmoid"},
    "ppo": {
        "rollout_batch_size": 16,
        "per_device_train_batch_size": 8,
        "ppo_epochs": 1,
        "max_new_tokens": 24,
        "max_length": 128,
        "reward": "non_empty",
    },
}


# Runs the command and writes its peak RSS (KiB on Linux) to argv[1]. The measured process is started
# from this small launcher, not from the benchmark process itself: a child's ru_maxrss also counts the
# memory image it had between fork and exec, i.e. a copy of whoever started it.
LAUNCHER = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` to its end in a fresh process; returns its peak RSS (MB), wall seconds and exit code.

    The peak is the kernel's ``ru_maxrss`` of that process (``os.wait4``), which includes the processes
    it started and waited for.
    """
    peak = log.with_suffix(".maxrss")
    start = time.perf_counter()
    with open(log, "wb") as sink:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(peak), *command], stdout=sink, stderr=subprocess.STDOUT
        )
    per_mb = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "peak_rss_mb": round(int(peak.read_text()) / per_mb, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "returncode": done.returncode,
    }


def child(kind: str, adapter: str, model: str, steps: int, data_dir: str, out: str) -> None:
    """One measured process: load the model, or run one stage for ``steps`` steps."""
    if kind == "load":
        from alignment.models import load_model

        load_model(model)
        return
    from bench.stages import write_datasets

    data = write_datasets(Path(data_dir))[kind]
    settings = dict(
        model=model,
        dataset=data,
        adapter=adapter,
        eval_split="none",
        max_steps=steps,
        save_steps=steps,
        save_total_limit=1,
        logging_steps=1,
        seed=0,
        **STAGE_SETTINGS[kind],
    )
    if kind == "sft":
        from alignment.stages.sft import SFTStageConfig, run_sft

        run_sft(SFTStageConfig(**settings), out)
    elif kind == "dpo":
        from alignment.stages.dpo import DPOStageConfig, run_dpo

        run_dpo(DPOStageConfig(**settings), out)
    else:
        from alignment.stages.ppo import PPOStageConfig, run_ppo

        run_ppo(PPOStageConfig(**settings), out)


def pipeline_recipe(path: Path, steps: int, classifier_limit: int = 200) -> Path:
    """The default pipeline recipe with every stage cut to ``steps`` steps (8 held-out rows) and the
    stereotype classifier to ``classifier_limit`` rows per source, written to ``path``."""
    import yaml

    recipe = yaml.safe_load(Path("recipes/smollm2-135m-instruct/pipeline.yaml").read_text(encoding="utf-8"))
    recipe["stereotype_classifier"]["limit"] = classifier_limit
    for stage in recipe["stages"]:
        stage["config"].update(max_steps=steps, save_steps=steps, max_eval_samples=8)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run_benchmark(
    model: str = "smollm2-135m-instruct",
    *,
    stages: tuple[str, ...] = ("sft", "dpo", "ppo"),
    adapters: tuple[str, ...] = ("full", "lora"),
    steps: int = 2,
    repeats: int = 1,
    pipeline: bool = True,
    pipeline_steps: int = 2,
    pipeline_limit: int = 8,
) -> dict[str, Any]:
    """The ``memory`` benchmark record: peak RSS (MB) per measurement, and LoRA / full ratios."""
    from alignment.console import err

    python = sys.executable
    jobs: dict[str, list[str]] = {"load": ["load", "full"]}
    jobs.update({f"{s}/{a}": [s, a] for s in stages for a in adapters})
    variants: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        commands = {
            name: [python, "-m", "bench.memory", "--child", kind, "--adapter", adapter, "--model", model]
            + ["--steps", str(steps), "--data", str(root / name / "data"), "--out", str(root / name / "run")]
            for name, (kind, adapter) in jobs.items()
        }
        data_dir = os.environ.get("SAFEALIGN_DATA_DIR")
        if pipeline and data_dir:
            recipe = pipeline_recipe(root / "pipeline.yaml", pipeline_steps)
            commands["pipeline"] = [python, "-m", "alignment", "pipeline", "--config", str(recipe)]
            commands["pipeline"] += ["--model", model, "--limit", str(pipeline_limit)]
            commands["pipeline"] += ["--runs-dir", str(root / "runs"), "--name", "bench-pipeline"]
        elif pipeline:
            details["pipeline"] = "left out: SAFEALIGN_DATA_DIR is not set"
        for name, command in commands.items():
            runs = []
            for i in range(repeats):
                (root / name).mkdir(parents=True, exist_ok=True)
                log = root / name / f"log-{i}.txt"
                with err.status(f"memory: {name} ({i + 1}/{repeats}) ..."):
                    result = measure(command, log)
                if result["returncode"] != 0:
                    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise RuntimeError(f"{name} failed (exit {result['returncode']}):\n{tail}")
                runs.append(result)
                for path in (root / name / "run", root / "runs"):  # next repeat starts from scratch
                    shutil.rmtree(path, ignore_errors=True)
            variants[name] = summarize([r["peak_rss_mb"] for r in runs], 1)
            details[name] = {"wall_s": [r["wall_s"] for r in runs], "command": " ".join(command)}
    ratios = {
        f"{s}: lora / full": ratio(variants[f"{s}/lora"], variants[f"{s}/full"])
        for s in stages
        if f"{s}/lora" in variants and f"{s}/full" in variants
    }
    return make_record(
        "memory",
        variants,
        n=repeats,
        unit="MB peak RSS",
        ratios=ratios,
        params={
            "model": model,
            "stage_steps": steps,
            "stage_settings": STAGE_SETTINGS,
            "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
            "pipeline": {
                "recipe": "recipes/smollm2-135m-instruct/pipeline.yaml with max_steps and save_steps set to "
                f"{pipeline_steps} and max_eval_samples 8 per stage, stereotype classifier limit 200",
                "eval_limit": pipeline_limit,
            },
        },
        details=details,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--stages", default="sft,dpo,ppo")
    parser.add_argument("--adapters", default="full,lora")
    parser.add_argument("--steps", type=int, default=2, help="steps per stage measurement")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per measurement")
    parser.add_argument("--no-pipeline", action="store_true", help="leave out the pipeline measurement")
    parser.add_argument("--pipeline-steps", type=int, default=2, help="steps per pipeline stage")
    parser.add_argument("--pipeline-limit", type=int, default=8, help="items per evaluation suite")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON record path (default: bench/results/memory.json; a child: its run dir)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--adapter", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.adapter, args.model, args.steps, args.data, args.out)
        return 0

    record = run_benchmark(
        args.model,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        adapters=tuple(a.strip() for a in args.adapters.split(",") if a.strip()),
        steps=args.steps,
        repeats=args.repeats,
        pipeline=not args.no_pipeline,
        pipeline_steps=args.pipeline_steps,
        pipeline_limit=args.pipeline_limit,
    )
    finish(record, args.out, title=f"Peak memory (RSS): {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "memory"))
