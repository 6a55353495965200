"""Figures of the PPO toy check over several seeds (the slow tests in test_ppo_stage.py assert them).

Run: ``HF_HUB_OFFLINE=1 python tests/ppo_toy_figures.py --seeds 0 1 2`` from the repository root. For each
seed it trains tiny-random for 30 iterations on the toy reward (spaces per completion token) with a small
and a large KL coefficient, and with LoRA, and prints reward start -> end (mean of the first and last five
iterations) and KL to the reference (mean of the last ten) as mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ppo_support import space_share, write_prompts  # noqa: E402
from test_ppo_stage import TOY  # noqa: E402

from alignment.stages.ppo import PPOStageConfig, run_ppo  # noqa: E402

LORA = dict(
    adapter="lora",
    lora_r=8,
    lora_alpha=16,
    lora_target_modules=[
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "lm_head",
    ],
    learning_rate=3e-3,
)
VARIANTS = {
    "full, kl_coef 0.05": dict(kl_coef=0.05),
    "full, kl_coef 1.0": dict(kl_coef=1.0),
    "lora, kl_coef 0.05": LORA,
}


def summarise(out: Path) -> dict[str, float]:
    record = json.loads((out / "stage.json").read_text(encoding="utf-8"))
    rows = record["curves"]["train"]
    reward, kl = [r["reward"] for r in rows], [r["kl"] for r in rows]
    return {
        "reward_start": sum(reward[:5]) / 5,
        "reward_end": sum(reward[-5:]) / 5,
        "kl_end": sum(kl[-10:]) / 10,
        "wall_time_s": record["wall_time_s"],
    }


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prompts = str(write_prompts(Path(tmp) / "prompts"))
        for name, change in VARIANTS.items():
            runs = []
            for seed in args.seeds:
                out = Path(tmp) / f"{name}-{seed}".replace(" ", "").replace(",", "-")
                config = PPOStageConfig(
                    **{**TOY, **change, "dataset": prompts, "max_steps": args.steps, "seed": seed}
                )
                run_ppo(config, out, reward_fn=space_share)
                runs.append(summarise(out))
            col = {key: spread([r[key] for r in runs]) for key in runs[0]}
            print(
                f"{name}: reward {col['reward_start']} -> {col['reward_end']}, KL (last 10) {col['kl_end']},"
                f" wall {col['wall_time_s']} s (n={len(runs)} seeds)",
                flush=True,
            )


if __name__ == "__main__":
    main()
