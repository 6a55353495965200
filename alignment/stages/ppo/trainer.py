"""The PPO loop: rollout, guards, PPO update, logging, held-out evaluation and checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignment.rl.advantages import ScoreNormalizer
from alignment.rl.anchor import Anchor, sample_anchor
from alignment.rl.kl import KLController
from alignment.rl.prompts import PromptSet, batch_indices
from alignment.rl.rollout import RewardFn, reward_label
from alignment.rl.scoring import paired_change
from alignment.rl.update import GuardTripped, ppo_update
from alignment.stages.ppo.checkpoint import TRAINER_STATE, load_checkpoint, params_finite, save_checkpoint
from alignment.stages.ppo.config import PPOStageConfig
from alignment.stages.ppo.display import LiveLog
from alignment.stages.ppo.models import Models, Sampled, collect, eos_token_ids, evaluate_heldout, global_mean
from alignment.stages.progress import outputs_finite, probe_ids
from alignment.stages.rundir import StageDir, last_complete_checkpoint


def total_steps(cfg: PPOStageConfig, n_prompts: int, world_size: int) -> int:
    """``max_steps``, or enough iterations to see every prompt ``num_train_epochs`` times.

    >>> total_steps(PPOStageConfig(max_steps=-1, num_train_epochs=2, rollout_batch_size=8), 20, 1)
    5
    """
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_train_epochs * n_prompts / (cfg.rollout_batch_size * world_size)))


class PPOTrainer:
    """The PPO loop of one stage run: optimiser, scheduler, KL controller and logged history.

    ``train()`` runs the remaining iterations; each one is :meth:`rollout`, :meth:`check_guards` and
    :meth:`update`. A tripped guard raises :class:`SafealignError` after keeping a checkpoint.
    """

    def __init__(
        self,
        cfg: PPOStageConfig,
        models: Models,
        accelerator: Any,
        reward: RewardFn,
        train: PromptSet,
        heldout: PromptSet | None,
        sd: StageDir,
        on_checkpoint: Callable[[int], None],
    ) -> None:
        from transformers import get_scheduler

        self.cfg, self.models, self.accelerator, self.reward = cfg, models, accelerator, reward
        self.train_prompts, self.heldout, self.sd, self.on_checkpoint = train, heldout, sd, on_checkpoint
        self.is_main = accelerator.is_main_process
        self.eos_ids = eos_token_ids(models.tokenizer, models.peft_model())
        self.steps = total_steps(cfg, len(train), accelerator.num_processes)
        head = [p for p in models.policy.value_head.parameters() if p.requires_grad]
        trunk = [p for p in models.policy.policy.parameters() if p.requires_grad]
        self.params, self.trunk = trunk + head, trunk
        self.optimizer = torch.optim.AdamW(
            [
                {"params": trunk, "lr": cfg.learning_rate},
                {"params": head, "lr": cfg.value_head_learning_rate},
            ],
            eps=1e-5,
            weight_decay=cfg.weight_decay,
        )
        warmup = int(cfg.warmup_steps * self.steps) if cfg.warmup_steps < 1 else int(cfg.warmup_steps)
        self.scheduler = get_scheduler(
            cfg.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup, num_training_steps=self.steps
        )
        self.controller = KLController(cfg.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon)
        self.normalizer = ScoreNormalizer(cfg.reward_normalization)
        self.hp = cfg.hyperparameters()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.step_times: list[float] = []
        self.heldout_base: list[float] = []  # per-prompt held-out reward of the starting policy (step 0)
        self.heldout_last: list[float] = []  # the same at the latest evaluation
        self.early_stop: dict[str, Any] | None = None
        self.anchor_prompts: PromptSet | None = None  # PPO-ptx: the pool the reference continues
        self._anchor_block: tuple[int, int, Anchor] | None = None  # (block, its first step, continuations)
        self.model = models.policy  # the module the updates run through (DDP-wrapped after prepare)

    def resume(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint, self.models.policy, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        self.controller.value = float(state["kl_coef"])
        self.history, self.evals = list(state.get("history", [])), list(state.get("evals", []))
        self.heldout_base = list(state.get("heldout_base", []))
        normalizer = state.get("score_normalizer")
        if normalizer:
            self.normalizer = ScoreNormalizer(self.cfg.reward_normalization, **normalizer)

    def prepare(self) -> None:
        """Hand the policy and optimiser to accelerate (device placement, DDP, mixed precision)."""
        self.model, self.optimizer = self.accelerator.prepare(self.models.policy, self.optimizer)
        self.models.policy = self.accelerator.unwrap_model(self.model)
        if self.models.reference is not None:
            self.models.reference.to(self.accelerator.device)

    def _seed(self, step: int) -> int:
        return (self.cfg.seed * 1_000_003 + step * 7_919 + self.accelerator.process_index) % (2**63 - 1)

    def rollout(self) -> Sampled:
        """Sample and score this iteration's prompts (seeded by ``(seed, step, process)``)."""
        acc = self.accelerator
        torch.manual_seed(self._seed(self.step))
        indices = batch_indices(
            len(self.train_prompts),
            self.cfg.rollout_batch_size,
            self.step,
            self.cfg.seed,
            acc.process_index,
            acc.num_processes,
        )
        prompts, token_ids, columns = self.train_prompts.select(indices)
        self.models.policy.eval()
        return collect(self.models, acc, self.cfg, self.reward, self.eos_ids, prompts, token_ids, columns)

    def anchor(self) -> Anchor | None:
        """PPO-ptx: the reference's fresh continuations of ``ptx_batch_size`` anchor prompts for each of this
        iteration's optimiser steps (drawn with replacement, seeded by ``(seed, step, process)``), or None
        when off or while only the value head trains.

        The continuations of as many iterations as fit in ``per_device_eval_batch_size`` are sampled in one
        batch, in blocks counted from step 0, so a resumed run samples the block it stopped in again."""
        pool = self.anchor_prompts
        if pool is None or self.step < self.cfg.value_warmup_steps:
            return None
        count = self.hp.optimizer_steps(self.cfg.rollout_batch_size) * self.cfg.ptx_batch_size
        per_block = max(1, self.cfg.per_device_eval_batch_size // count)
        block = self.step // per_block
        if self._anchor_block is None or self._anchor_block[0] != block:
            first = max(block * per_block, self.cfg.value_warmup_steps)
            rows = []
            for step in range(first, min((block + 1) * per_block, self.steps)):
                draw = torch.Generator().manual_seed(self._seed(step) + 1)
                rows += torch.randint(len(pool), (count,), generator=draw).tolist()
            torch.manual_seed(self._seed(first) + 2)
            _, token_ids, _ = pool.select(rows)
            with torch.no_grad(), self.accelerator.autocast(), self.models.reference_lm() as reference:
                sampled = sample_anchor(
                    reference,
                    token_ids,
                    max_new_tokens=self.cfg.max_new_tokens,
                    eos_token_ids=self.eos_ids,
                    pad_token_id=self.models.tokenizer.pad_token_id,
                    device=self.accelerator.device,
                )
            self._anchor_block = (block, first, sampled)
        _, first, sampled = self._anchor_block
        offset = (self.step - first) * count
        return sampled.rows(offset, offset + count)

    def check_guards(self, sampled: Sampled) -> float:
        """Raise :class:`GuardTripped` for non-finite rewards or a KL above the ceiling (before updating);
        return the batch's mean KL per completion."""
        acc = self.accelerator
        counts = torch.tensor(
            [sum(not math.isfinite(v) for v in sampled.raw_scores), len(sampled.raw_scores)],
            device=acc.device,
        )
        if acc.num_processes > 1:
            counts = acc.reduce(counts, reduction="sum")
        if int(counts[0]):
            raise GuardTripped(
                f"the reward function returned NaN/inf (or None) for {int(counts[0])} of "
                f"{int(counts[1])} completions (reward {reward_label(self.reward)})"
            )
        r = sampled.rollouts
        kl = float(((r.logprobs - r.ref_logprobs) * r.response_mask).sum(1).mean())
        kl = global_mean(acc, {"kl": kl})["kl"]
        if self.cfg.kl_ceiling is not None and kl > self.cfg.kl_ceiling:
            raise GuardTripped(
                f"the KL to the reference ({kl:.2f} nats per completion) exceeds "
                f"kl_ceiling {self.cfg.kl_ceiling}"
            )
        return kl

    def check_weights(self) -> None:
        """Raise :class:`GuardTripped` when the update left weights, or the outputs, non-finite."""
        policy = self.models.policy
        if not params_finite(policy) or not outputs_finite(policy.policy, probe_ids(self.models.tokenizer)):
            raise GuardTripped(f"the weights are not finite after step {self.step + 1}; lower learning_rate")

    def update(self, sampled: Sampled, anchor: Anchor | None = None) -> dict[str, Any]:
        """PPO epochs on the rollouts (plus the PPO-ptx loss on ``anchor``); returns the logged row of this
        iteration."""
        acc = self.accelerator
        generator = torch.Generator().manual_seed(self._seed(self.step))
        self.models.policy.train()
        r = sampled.rollouts
        pooled = acc.gather(r.scores) if acc.num_processes > 1 else None
        r.scores = self.normalizer(r.scores, pooled)
        warming_up = self.step < self.cfg.value_warmup_steps
        stats = ppo_update(
            self.model,
            self.optimizer,
            r,
            self.controller.value,
            self.hp,
            generator=generator,
            backward=acc.backward,
            clip_grad=lambda n: acc.clip_grad_norm_(self.params, n),
            no_sync=(lambda: acc.no_sync(self.model)) if acc.num_processes > 1 else None,
            scheduler=self.scheduler,
            critic_only=self.trunk if warming_up else None,
            anchor=anchor,
            ptx_coef=self.cfg.ptx_coef,
        )
        mask = r.response_mask.float()
        raw = torch.tensor(sampled.raw_scores)
        local = {
            "reward": float(raw.mean()),
            "reward_std": float(raw.std()) if len(raw) > 1 else 0.0,
            "score": float(r.scores.mean()),
            "entropy": float((r.entropy * mask).sum() / mask.sum().clamp(min=1)),
            "response_length": float(mask.sum(1).mean()),
            "ended_fraction": float(sampled.ended.float().mean()),
            **{f"reward/{k}": v for k, v in sampled.components.items()},
            **stats,
        }
        row = global_mean(acc, local)
        row["kl_per_token"] = row["kl"] / max(row["response_length"], 1e-8)
        self.controller.update(row["kl"], n_steps=self.cfg.rollout_batch_size * acc.num_processes)
        return {
            "step": self.step + 1,
            **{k: round(v, 6) for k, v in row.items()},
            "kl_coef": round(self.controller.value, 8),
            "critic_only": warming_up,
            "learning_rate": self.scheduler.get_last_lr()[0],
        }

    def evaluate(self, console: Any) -> None:
        """Score ``eval_samples`` completions per held-out prompt and append the means to the eval curve."""
        self.models.policy.eval()
        result, per_prompt = evaluate_heldout(
            self.models, self.accelerator, self.cfg, self.reward, self.eos_ids, self.heldout, self.step == 0
        )
        if self.step == 0 and not self.heldout_base:
            self.heldout_base = per_prompt
        self.heldout_last = per_prompt
        row = {"step": self.step, **{k: round(v, 6) for k, v in result.items()}}
        if self.step > 0 and len(self.heldout_base) == len(per_prompt):
            change = paired_change(np.array(self.heldout_base), np.array(per_prompt), seed=self.cfg.seed)
            row.update(eval_change_in_base_sd=change["change_in_base_sd"], eval_change_p=change["p"])
        self.evals.append(row)
        if self.is_main:
            console.print(
                f"[dim]ppo held-out at step {self.step}: reward {result['eval_reward']:.4f}, "
                f"KL {result['eval_kl']:.3f} ({result['eval_kl_per_token']:.4f}/token) over "
                f"{result['eval_prompts']} prompts x {self.cfg.eval_samples}[/]"
            )

    def heldout_change(self, console: Any) -> dict[str, Any] | None:
        """The trained minus starting policy's held-out reward, paired over prompts (None without both)."""
        if not self.heldout_base or len(self.heldout_base) != len(self.heldout_last) or self.step == 0:
            return None
        change = paired_change(np.array(self.heldout_base), np.array(self.heldout_last), seed=self.cfg.seed)
        if self.is_main:
            low, high = change["ci95"]
            console.print(
                f"ppo held-out reward {change['base_mean']:.4f} -> {change['trained_mean']:.4f}: "
                f"{change['change']:+.4f} ({change['change_in_base_sd']:+.2f} base sd; 95% CI "
                f"{low:+.4f} to {high:+.4f}, p {change['p']:.3f}, {change['n']} prompts)"
            )
        return change

    def save(self, **extra: Any) -> Path | None:
        """Checkpoint the current state as ``checkpoint-<step>`` (main process; all processes wait)."""
        path = None
        if self.is_main:
            state = {
                "kl_coef": self.controller.value,
                "history": self.history,
                "evals": self.evals,
                "heldout_base": self.heldout_base,
                "score_normalizer": self.normalizer.state(),
                **extra,
            }
            path = save_checkpoint(
                self.sd,
                self.step,
                self.models.policy,
                self.optimizer,
                self.scheduler,
                state,
                self.cfg.save_total_limit,
            )
            self.on_checkpoint(self.step)
        self.accelerator.wait_for_everyone()
        return path

    def keep_checkpoint(self, reason: str) -> Path | None:
        """The checkpoint kept when a guard trips: this step's (saved now unless it exists), or the newest
        complete one when the weights are no longer finite."""
        existing = self.sd.checkpoints / f"checkpoint-{self.step}"
        if (existing / TRAINER_STATE).is_file():
            return existing
        if params_finite(self.models.policy):
            return self.save(stopped=reason)
        return last_complete_checkpoint(self.sd.checkpoints)

    def train(self, console: Any) -> None:
        """Run the iterations left (all of them, or those after the resumed checkpoint)."""
        cfg = self.cfg
        live = LiveLog(f"ppo {self.sd.root.name}", self.steps, self.step, enabled=self.is_main)
        try:
            if self.heldout is not None and self.step == 0 and not self.evals:
                self.evaluate(console)
            while self.step < self.steps:
                started = time.perf_counter()
                sampled = self.rollout()
                kl = self.check_guards(sampled)
                if cfg.kl_stop is not None and kl > cfg.kl_stop:
                    self.stop_early(kl, console)
                    break
                row = self.update(sampled, self.anchor())
                self.check_weights()
                self.step += 1
                self.step_times.append(time.perf_counter() - started)
                row["step_time_s"] = round(self.step_times[-1], 4)
                logged = self.step % cfg.logging_steps == 0 or self.step == self.steps
                if logged:
                    self.history.append(row)
                    if self.accelerator.trackers:
                        self.accelerator.log(row, step=self.step)
                live.advance(self.step, row if logged else None)
                if self.heldout is not None and cfg.eval_steps and self.step % cfg.eval_steps == 0:
                    if self.step < self.steps:
                        self.evaluate(console)
                if self.step % cfg.save_steps == 0 or self.step == self.steps:
                    self.save()
        finally:
            live.close()
        if self.heldout is not None and (not self.evals or self.evals[-1]["step"] != self.step):
            self.evaluate(console)

    def stop_early(self, kl: float, console: Any) -> None:
        """End training at this step because the KL passed ``kl_stop``: keep the model as it is."""
        self.early_stop = {"step": self.step, "kl": round(kl, 6), "kl_stop": self.cfg.kl_stop}
        if self.is_main:
            console.print(
                f"[yellow]ppo stops early at step {self.step}: KL {kl:.2f} nats per completion exceeds "
                f"kl_stop {self.cfg.kl_stop}; the model of this step is kept[/]"
            )
        if not (self.sd.checkpoints / f"checkpoint-{self.step}" / TRAINER_STATE).is_file():
            self.save(early_stop=self.early_stop)

    def step_time(self) -> dict[str, Any]:
        """Median and spread of the iteration times, leaving out the first (warm-up)."""
        times = sorted(self.step_times[1:] or self.step_times)
        if not times:
            return {"n": 0}
        return {
            "n": len(times),
            "median_s": round(times[len(times) // 2], 4),
            "p10_s": round(times[int(0.1 * (len(times) - 1))], 4),
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 4),
        }
