"""Seconds per iteration of our PPO next to TRL's GRPO and RLOO on the same model, number of completions
per iteration and completion length: ``python -m bench.rl --model M --out bench.json``.

Every method runs a few iterations of its stage (``run_ppo``, ``run_grpo``, ``run_rloo``) into a
temporary folder; the time per iteration is summarised (median, min-max, IQR) over the iterations
after the first (warm-up): PPO's from its curves, GRPO/RLOO's from the stages' step timer. PPO runs
twice: *matched* (one update over the whole batch, like GRPO/RLOO with ``num_iterations=1``) and
with the recipe's usual ``ppo_epochs=2`` over two minibatches. Completions can stop early, so the
mean completion length and the time per 1,000 generated tokens are reported too. The record goes to
``bench/results/rl.json`` (``make bench-rl``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.record import cli_main, finish, make_record, ratio, summarize


def _synthetic_prompts(folder: Path, n: int = 64) -> str:
    from datasets import Dataset, DatasetDict

    topics = ["my neighbor", "the nurse", "a teacher", "the engineer", "the old man", "people from the city"]
    rows = [
        {"prompt": f"Tell me something about {topics[i % len(topics)]} ({i}).", "source": "bench"}
        for i in range(n)
    ]
    DatasetDict(train=Dataset.from_list(rows)).save_to_disk(str(folder))
    return str(folder)


def _trl_lengths(out: Path) -> list[float]:
    states = sorted((out / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    if not states:
        return []
    history = json.loads(states[-1].read_text(encoding="utf-8"))["log_history"]
    return [h["completions/mean_length"] for h in history if "completions/mean_length" in h]


def _details(out: Path, lengths: list[float], completions: int, median: float) -> dict[str, Any]:
    record = json.loads((out / "stage.json").read_text(encoding="utf-8"))
    mean_length = statistics.fmean(lengths) if lengths else None
    per_1k = median / (completions * mean_length) * 1000 if median and mean_length else None
    return {
        "mean_completion_tokens": round(mean_length, 2) if mean_length else None,
        "s_per_1k_completion_tokens": round(per_1k, 4) if per_1k else None,
        "peak_memory": record.get("peak_memory"),
    }


def run_benchmark(
    model: str,
    *,
    dataset: str | None = None,
    reward: str = "non_empty",
    completions: int = 16,
    generations: int = 4,
    max_new_tokens: int = 32,
    steps: int = 6,
    seed: int = 0,
    methods: tuple[str, ...] = ("ppo_matched", "ppo_recipe", "grpo", "rloo"),
) -> dict[str, Any]:
    """Time each method on the same model and batch shape; returns the ``rl`` benchmark record."""
    from alignment.stages.grpo import GRPOStageConfig, run_grpo
    from alignment.stages.ppo import PPOStageConfig, run_ppo
    from alignment.stages.progress import collecting_step_times
    from alignment.stages.rloo import RLOOStageConfig, run_rloo

    shared = dict(
        model=model,
        reward=reward,
        max_new_tokens=max_new_tokens,
        max_length=max_new_tokens + 192,
        max_steps=steps,
        save_steps=steps,
        save_total_limit=1,
        eval_split="none",
        seed=seed,
        learning_rate=1e-6,
        kl_coef=0.05,
        logging_steps=1,
        temperature=1.0,
    )
    variants: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        root = Path(tmp)
        data = dataset or _synthetic_prompts(root / "prompts")
        for method in methods:
            out = root / method
            if method.startswith("ppo"):
                matched = method == "ppo_matched"
                cfg = PPOStageConfig(
                    **shared,
                    dataset=data,
                    rollout_batch_size=completions,
                    per_device_train_batch_size=completions if matched else completions // 2,
                    ppo_epochs=1 if matched else 2,
                )
                run_ppo(cfg, out)
                history = json.loads((out / "stage.json").read_text())["curves"]["train"]
                lengths = [row["response_length"] for row in history]
                times = [row["step_time_s"] for row in history]
                optimizer_steps = 1 if matched else 4
            else:
                config_cls, run = (
                    (GRPOStageConfig, run_grpo) if method == "grpo" else (RLOOStageConfig, run_rloo)
                )
                cfg = config_cls(
                    **shared,
                    dataset=data,
                    per_device_train_batch_size=completions,
                    num_generations=generations,
                    ppo_epochs=1,
                )
                with collecting_step_times() as recorded:
                    run(cfg, out)
                lengths = _trl_lengths(out)
                times = recorded[-1]
                optimizer_steps = 1
            variants[method] = summarize(times[1:] or times)
            details[method] = {
                **_details(out, lengths, completions, variants[method]["median"]),
                "first_iteration_s": round(times[0], 4) if times else None,
                "optimizer_steps_per_iteration": optimizer_steps,
            }
    ratios = {
        f"{method} / ppo_matched": ratio(variants[method], variants["ppo_matched"])
        for method in variants
        if method != "ppo_matched" and "ppo_matched" in variants
    }
    return make_record(
        "rl",
        variants,
        n=steps - 1,
        unit="s/iteration",
        ratios=ratios,
        params={
            "model": model,
            "completions_per_iteration": completions,
            "generations_per_prompt_grpo_rloo": generations,
            "max_new_tokens": max_new_tokens,
            "iterations": steps,
            "reward": reward,
            "dataset": dataset or "synthetic (64 short prompts)",
            "seed": seed,
        },
        details=details,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", default=None, help="prompt dataset dir (default: 64 synthetic prompts)")
    parser.add_argument("--reward", default="non_empty", help="reward spec (default: the cheap non_empty)")
    parser.add_argument("--completions", type=int, default=16, help="completions per iteration (all methods)")
    parser.add_argument("--generations", type=int, default=4, help="GRPO/RLOO group size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="iterations per method (the first is not timed)")
    parser.add_argument("--methods", default="ppo_matched,ppo_recipe,grpo,rloo")
    parser.add_argument("--out", default=None, help="JSON record path (default: bench/results/rl.json)")
    args = parser.parse_args(argv)
    record = run_benchmark(
        args.model,
        dataset=args.dataset,
        reward=args.reward,
        completions=args.completions,
        generations=args.generations,
        max_new_tokens=args.max_new_tokens,
        steps=args.steps,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
    )
    title = (
        f"RL iteration time: {args.model}, {args.completions} completions x <= {args.max_new_tokens} tokens"
    )
    finish(record, args.out, title=title)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "rl"))
