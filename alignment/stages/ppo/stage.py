"""``run_ppo``: the PPO stage in its run directory (skip, resume, force, ``stage.json``, manifest)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

import alignment.stages.prompt_data  # noqa: F401  (registers the `prompt` dataset kind)
from alignment.errors import SafealignError
from alignment.rl.headroom import choose_prompts, headroom_identity, subset
from alignment.rl.prompts import PromptSet, encode_prompts
from alignment.rl.rollout import RewardFn
from alignment.rl.update import GuardTripped
from alignment.stages.common import choose_precision, resolve_input_model
from alignment.stages.data import load_stage_data
from alignment.stages.ppo.checkpoint import save_final
from alignment.stages.ppo.config import PPOStageConfig
from alignment.stages.ppo.models import eos_token_ids, load_models
from alignment.stages.ppo.trainer import PPOTrainer
from alignment.stages.record import StageRecord, config_hash, precision_fields, record_head, resumed_fields
from alignment.stages.rundir import StageDir
from alignment.stages.runner import (
    broadcast_from_main,
    check_finite_model,
    default_output_dir,
    load_config_data,
    locked_stage_dir,
)
from alignment.stages.trl_online import build_reward_fn

STAGE = "ppo"


def _load_prompts(
    cfg: PPOStageConfig, sd: StageDir, tokenizer: Any
) -> tuple[PromptSet, PromptSet | None, dict]:
    data = load_config_data(cfg, "prompt", sd)
    train = _encode_train(cfg, tokenizer, list(data.train), str(cfg.dataset))
    heldout = _encode(cfg, tokenizer, list(data.eval)) if data.eval is not None else None
    info = dict(data.info, train_prompts=len(train), train_dropped_too_long=train.dropped)
    if heldout is not None:
        info.update(eval_prompts=len(heldout), eval_dropped_too_long=heldout.dropped)
    return train, (heldout if heldout is not None and len(heldout) else None), info


def _load_anchor_prompts(cfg: PPOStageConfig, sd: StageDir, tokenizer: Any) -> PromptSet | None:
    """``ptx_samples`` train prompts of ``ptx_dataset``, rendered like the RL prompts (None when PPO-ptx
    is off)."""
    if cfg.ptx_coef <= 0:
        return None
    data = load_stage_data(
        str(cfg.ptx_dataset),
        "prompt",
        eval_split=None,
        max_train_samples=cfg.ptx_samples,
        seed=cfg.seed,
        build_dir=sd.root / "ptx_dataset",
    )
    return _encode_train(cfg, tokenizer, list(data.train), f"ptx_dataset {cfg.ptx_dataset}")


def _encode(cfg: PPOStageConfig, tokenizer: Any, rows: list[dict]) -> PromptSet:
    """Render and tokenize prompts as the stage samples them (too long ones dropped and counted)."""
    limit = cfg.max_length - cfg.max_new_tokens
    return encode_prompts(
        tokenizer, rows, max_prompt_tokens=limit, system=cfg.system_prompt, chat=cfg.chat_template
    )


def _encode_train(cfg: PPOStageConfig, tokenizer: Any, rows: list[dict], name: str) -> PromptSet:
    """Training prompts as :func:`_encode` renders them; an error when none fits."""
    prompts = _encode(cfg, tokenizer, rows)
    if not len(prompts):
        raise SafealignError(
            f"{name}: every prompt is longer than max_length - max_new_tokens = "
            f"{cfg.max_length - cfg.max_new_tokens} tokens; raise max_length or lower max_new_tokens"
        )
    return prompts


def _with_headroom(
    cfg: PPOStageConfig,
    sd: StageDir,
    models: Any,
    reward: RewardFn,
    identity: dict[str, Any],
    accelerator: Any,
    prompts: tuple[PromptSet, PromptSet | None, dict],
) -> tuple[PromptSet, PromptSet | None, dict]:
    """The train (and held-out) prompts cut to those with headroom; the main process samples, the others
    receive its choice."""
    train, heldout, data_info = prompts
    kept, kept_heldout, record = broadcast_from_main(
        lambda: choose_prompts(
            cfg,
            models.peft_model(),
            models.tokenizer,
            reward,
            train,
            heldout,
            run_dir=sd.root,
            identity=identity,
            eos_token_ids=eos_token_ids(models.tokenizer, models.peft_model()),
        ),
        accelerator.state,
    )
    train = subset(train, kept)
    info = dict(data_info, headroom=record, train_prompts=len(train))
    if heldout is not None and kept_heldout is not None:
        heldout = subset(heldout, kept_heldout)
        info["eval_prompts"] = len(heldout)
    return train, heldout, info


def _summary(history: list[dict[str, Any]], evals: list[dict[str, Any]], window: int = 5) -> dict[str, Any]:
    """Start and end of the reward and KL curves (means over the first and last ``window`` steps)."""
    metrics: dict[str, Any] = {}
    if history:
        head, tail = history[:window], history[-window:]
        for key in ("reward", "kl", "entropy", "response_length"):
            for name, part in (("start", head), ("end", tail)):
                values = [
                    r[key] for r in part if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
                ]
                if values:
                    metrics[f"{key}_{name}"] = round(sum(values) / len(values), 6)
        metrics["kl_coef_end"] = history[-1].get("kl_coef")
    if evals:
        for key in ("eval_reward", "eval_kl", "eval_kl_per_token"):
            metrics[f"{key}_start"] = evals[0].get(key)
            metrics[f"{key}_end"] = evals[-1].get(key)
        metrics["eval_prompts"] = evals[-1].get("eval_prompts")
    return metrics


def run_ppo(
    config: PPOStageConfig, out_dir: str | Path | None = None, *, reward_fn: RewardFn | None = None
) -> Path:
    """Run (or skip, or resume) the PPO stage; returns the saved model directory ``out_dir/model``.

    ``reward_fn`` overrides ``config.reward`` with a callable (Python API); it is not part of the config
    hash, so resuming or skipping trusts the caller to pass the same function.
    """
    from accelerate import Accelerator

    cfg = config
    precision = choose_precision(cfg.precision, cfg.adapter)
    if precision.quantize_4bit:
        raise SafealignError("adapter 'qlora' is not supported by the PPO stage yet: use 'lora' or 'full'")
    trackers = [t for t in cfg.report_to if t != "none"]
    sd = StageDir(Path(out_dir) if out_dir is not None else default_output_dir(STAGE, cfg))
    accelerator = Accelerator(
        mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(precision.name, "no"),
        log_with=trackers or None,
        project_dir=str(sd.root / "logs") if trackers else None,
        cpu=precision.device == "cpu",
    )
    with locked_stage_dir(sd, accelerator.is_main_process):
        return _run_locked(cfg, sd, accelerator, precision, trackers, reward_fn)


def _run_locked(
    cfg: PPOStageConfig,
    sd: StageDir,
    accelerator: Any,
    precision: Any,
    trackers: list[str],
    reward_fn: RewardFn | None,
) -> Path:
    from alignment.console import err

    is_main = accelerator.is_main_process
    chash, hashed = config_hash(cfg), cfg.hashed_items()
    decision = broadcast_from_main(
        lambda: sd.decide(STAGE, chash, hashed, resume=cfg.resume, force=cfg.force, defer_clear=True),
        accelerator.state,
    )
    if decision.action == "skip":
        if is_main:
            err.print(f"[green]{decision.note}[/]")
        return sd.model
    if is_main and decision.note:
        err.print(f"[dim]{decision.note}[/]")
    source = resolve_input_model(cfg.model)
    # Reward, model and prompts are checked before the run directory changes: bad input leaves no trace.
    reward = build_reward_fn(cfg.reward, reward_fn)
    torch.manual_seed(cfg.seed)  # value-head and LoRA initialisation
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    models = load_models(cfg, source, precision)
    check_finite_model(models.policy, cfg.model)
    loaded: dict[str, Any] = {}

    def load_on_main() -> bool:
        loaded["data"] = _load_prompts(cfg, sd, models.tokenizer)
        loaded["anchor"] = _load_anchor_prompts(cfg, sd, models.tokenizer)
        return True

    broadcast_from_main(load_on_main, accelerator.state)  # a builder spec is built once, by the main process
    train, heldout, data_info = loaded["data"] if is_main else _load_prompts(cfg, sd, models.tokenizer)
    anchor_prompts = loaded["anchor"] if is_main else _load_anchor_prompts(cfg, sd, models.tokenizer)
    if decision.clear and is_main:
        sd.clear()
    if cfg.headroom_quantile is not None:
        identity = headroom_identity(cfg, source, reward, reward_fn)
        prompts = (train, heldout, data_info)
        train, heldout, data_info = _with_headroom(cfg, sd, models, reward, identity, accelerator, prompts)
    previous = (sd.read() or {}) if decision.action == "resume" else {}
    stage_record = StageRecord(
        sd,
        {
            **record_head(STAGE, cfg, source),
            "precision": precision_fields(precision),
            **resumed_fields(previous),
            "processes": accelerator.num_processes,
        },
        is_main=is_main,
    )
    stage_record.open(cfg)
    try:
        stage_record.save(
            dataset=data_info,
            reward={
                "spec": cfg.reward if reward_fn is None else None,
                "callable": getattr(reward, "__name__", type(reward).__name__),
                "info": getattr(reward, "info", None),
            },
        )
        trainer = PPOTrainer(cfg, models, accelerator, reward, train, heldout, sd, stage_record.on_checkpoint)
        if decision.checkpoint is not None:
            trainer.resume(decision.checkpoint)
        stage_record.segment["from_step"] = trainer.step
        trainer.prepare()
        if anchor_prompts is not None:
            trainer.anchor_prompts = anchor_prompts
            stage_record.save(
                ptx={"prompts": len(anchor_prompts), "dropped_too_long": anchor_prompts.dropped}
            )
        if trackers:
            accelerator.init_trackers(sd.root.name, config={k: str(v) for k, v in cfg.to_dict().items()})
        try:
            trainer.train(err)
        except GuardTripped as exc:
            kept = trainer.keep_checkpoint(str(exc))
            stage_record.save(
                status="stopped", stopped={"step": trainer.step, "reason": str(exc), "checkpoint": str(kept)}
            )
            where_kept = f"checkpoint kept at {kept}" if kept else "no checkpoint could be kept"
            raise SafealignError(f"PPO stopped at step {trainer.step}: {exc}; {where_kept}") from exc
        model_record = {}
        if is_main:
            model_record = save_final(
                sd,
                models.policy,
                models.tokenizer,
                source,
                merge=cfg.merge_adapter,
                trust_remote_code=cfg.trust_remote_code,
            )
        accelerator.wait_for_everyone()
        metrics = _summary(trainer.history, trainer.evals)
        change = trainer.heldout_change(err)
        if change is not None:
            metrics["eval_reward_change"] = change
        if trainer.early_stop is not None:
            metrics["early_stop"] = trainer.early_stop
        stage_record.complete(
            STAGE,
            global_step=trainer.step,
            max_steps=trainer.steps,
            metrics=metrics,
            curves={"train": trainer.history, "eval": trainer.evals},
            model=model_record,
            step_time=trainer.step_time(),
        )
        if trackers:
            accelerator.end_training()
    except BaseException as exc:
        stage_record.fail(exc)
        raise
    if is_main:
        err.print(f"[green]ppo finished[/]: model in {sd.model}")
    return sd.model
