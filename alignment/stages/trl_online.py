"""What the GRPO and RLOO stages share: TRL's online trainers with safealign's reward callables.

Both sample ``num_generations`` completions per prompt, score them with the reward spec (the same
``reward`` key and callables as PPO), and use the group as the baseline instead of a value function.
They run through the shared stage driver (:func:`alignment.stages.runner.run_stage`), so recipes, run
directories, ``stage.json``, checkpoints, ``--resume`` and ``--force`` behave as for SFT and DPO.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignment.errors import SafealignError
from alignment.rl.headroom import HeadroomConfig
from alignment.rl.rollout import RewardFailed, RewardFn, reward_label, score_completions
from alignment.stages.common import StageConfig, load_causal_lm
from alignment.stages.data import StageData
from alignment.stages.prompt_data import prepare_for_trl
from alignment.stages.runner import StageContext, StageSpec, run_stage


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class OnlineRLConfig(HeadroomConfig, StageConfig):
    """Settings GRPO and RLOO share; the names match the PPO stage where the meaning is the same.

    ``per_device_train_batch_size`` counts completions (``num_generations`` per prompt) and must be a
    multiple of ``num_generations``. The ``headroom_*`` keys pick prompts with headroom, as for PPO.
    """

    reward: dict[str, Any] | str | None = field(
        default=None,
        metadata=_help("reward spec for reward.registry.build_reward (as for PPO; see docs/ppo.md)"),
    )
    num_generations: int = field(default=4, metadata=_help("completions sampled per prompt (the group)"))
    max_new_tokens: int = field(default=64, metadata=_help("longest completion sampled"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature"))
    kl_coef: float = field(
        default=0.05, metadata=_help("KL penalty coefficient beta (0: no reference model)")
    )
    clip_range: float = field(default=0.2, metadata=_help("policy ratio clip epsilon"))
    ppo_epochs: int = field(default=1, metadata=_help("updates per generated batch (TRL's num_iterations)"))
    system_prompt: str | None = field(default=None, metadata=_help("system message added to every prompt"))
    chat_template: bool | None = field(
        default=None,
        metadata=_help("render prompts with the chat template (default: when the tokenizer has one)"),
    )
    learning_rate: float = field(default=1e-6, metadata=_help("peak learning rate"))
    lora_dropout: float = field(
        default=0.0, metadata=_help("dropout on the LoRA branch (dropout is turned off)")
    )
    max_eval_samples: int | None = field(default=64, metadata=_help("held-out prompts evaluated"))
    trl_evaluation: bool = field(
        default=False,
        metadata=_help(
            "also run TRL's own evaluation (num_generations completions per held-out prompt at the start, "
            "every eval_steps and the end; minutes on a CPU); the paired held-out reward "
            "(metrics.eval_reward_change) is scored either way"
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_headroom()
        if self.eval_steps is not None and not self.trl_evaluation:
            raise ValueError("eval_steps schedules TRL's own evaluation: set trl_evaluation: true with it")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 (the group is the baseline), got {self.num_generations}"
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        if self.max_new_tokens < 1 or self.max_new_tokens >= self.max_length:
            raise ValueError(f"max_new_tokens must be in [1, max_length), got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.kl_coef < 0 or self.clip_range < 0 or self.ppo_epochs < 1:
            raise ValueError("kl_coef and clip_range must be >= 0 and ppo_epochs >= 1")


LENGTH_CAP_HELP = "prompt + completion cap: safealign drops longer prompts before TRL sees them"


def shared_settings(cfg: OnlineRLConfig, data: StageData) -> dict[str, Any]:
    """TRL fields GRPO and RLOO both take, from our config."""
    return {
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": 1.0,
        "top_k": 0,
        "beta": cfg.kl_coef,
        "epsilon": cfg.clip_range,
        "num_iterations": cfg.ppo_epochs,
        "disable_dropout": True,
        "per_device_eval_batch_size": max(cfg.per_device_eval_batch_size, cfg.num_generations)
        // cfg.num_generations
        * cfg.num_generations,
        **({} if cfg.trl_evaluation else {"eval_strategy": "no", "eval_on_start": False}),
    }


def build_reward_fn(spec: dict[str, Any] | str | None, reward_fn: RewardFn | None) -> RewardFn:
    """The reward callable: ``reward_fn`` when given (Python API), else built from the recipe's ``reward``."""
    if reward_fn is not None:
        return reward_fn
    if spec is None or spec == "":
        raise SafealignError(
            "no reward given: set `reward:` in the recipe (or --reward NAME); see docs/ppo.md"
        )
    from reward.registry import build_reward

    return build_reward(spec, source="reward")


def guarded_reward(reward_fn: RewardFn) -> RewardFn:
    """``reward_fn`` for TRL: a reward that raises, miscounts or returns a non-finite score stops the stage.

    The error is :class:`alignment.rl.rollout.RewardFailed` naming the function (as in PPO); the stage
    runner records the run as stopped and names its last checkpoint.
    """

    def reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kwargs: Any):
        scores = score_completions(reward_fn, prompts, completions, completion_ids, **kwargs)
        bad = sum(not math.isfinite(score) for score in scores)
        if bad:
            raise RewardFailed(
                f"reward {reward_label(reward_fn)} returned {bad} non-finite or missing scores "
                f"for {len(scores)} completions"
            )
        return scores

    reward.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)  # TRL logs rewards/<name>
    return reward


def run_online(
    name: str,
    config_cls: type[OnlineRLConfig],
    settings: Callable[[Any, StageData], dict[str, Any]],
    trainer_cls: Callable[[], type],
    config: OnlineRLConfig,
    out_dir: str | Path | None,
    reward_fn: RewardFn | None,
) -> Path:
    """Run one online-RL stage through the shared driver; ``trainer_cls`` imports TRL's trainer lazily."""
    heldout = HeldoutReward()
    spec = StageSpec(
        name=name,
        data_kind="prompt",
        config_cls=config_cls.trl_config_class,
        settings=settings,
        make_trainer=lambda ctx: make_online_trainer(ctx, trainer_cls(), reward_fn, heldout),
        final_metrics=heldout.finish,
    )
    return run_stage(spec, config, out_dir)


def make_online_trainer(
    ctx: StageContext, trainer_cls: type, reward_fn: RewardFn | None, heldout: HeldoutReward | None = None
) -> Any:
    """The TRL trainer on prompts shaped like PPO's, with the reference read from the saved input model;
    ``heldout`` scores the starting model on the held-out prompts before training."""
    cfg: OnlineRLConfig = ctx.cfg
    if ctx.source.kind == "adapter" and cfg.adapter != "full" and cfg.kl_coef > 0:
        raise SafealignError(
            f"{trainer_cls.__name__} on the LoRA adapter {ctx.source.spec}: TRL would take the bare base "
            "(adapter off) as the KL reference, not the adapter's policy; save the previous stage merged "
            "(merge_adapter: true), or use adapter: full, or kl_coef: 0"
        )
    limit = cfg.max_length - cfg.max_new_tokens
    shaped = {}
    for name, ds in (("train", ctx.data.train), ("eval", ctx.data.eval)):
        if ds is not None:
            shaped[name], dropped = prepare_for_trl(
                ds, ctx.tokenizer, max_prompt_tokens=limit, system=cfg.system_prompt, chat=cfg.chat_template
            )
            ctx.data.info[f"{name}_dropped_too_long"] = dropped
    if not len(shaped["train"]):
        raise SafealignError(
            f"{cfg.dataset}: every prompt is longer than max_length - max_new_tokens = {limit} tokens"
        )
    reward = build_reward_fn(cfg.reward, reward_fn)
    if cfg.headroom_quantile is not None:
        shaped = with_headroom(ctx, shaped, reward, reward_fn)
    eval_ds = shaped.get("eval")
    if eval_ds is not None and not len(eval_ds):
        eval_ds = None
    if heldout is not None and eval_ds is not None:
        heldout.start(ctx, eval_ds, reward)
    trainer = trainer_cls(
        **ctx.trainer_kwargs(
            reward_funcs=[guarded_reward(reward)],
            train_dataset=shaped["train"],
            eval_dataset=eval_ds if cfg.trl_evaluation else None,
        )
    )
    if getattr(trainer, "ref_model", None) is not None and ctx.source.kind == "adapter":
        # TRL rebuilt the reference from config._name_or_path, the adapter's base: use the merged input.
        reference = load_causal_lm(ctx.source, ctx.precision, trust_remote_code=cfg.trust_remote_code)
        reference.requires_grad_(False).eval()
        trainer.ref_model = trainer.accelerator.prepare_model(reference, evaluation_mode=True)
    return trainer


def with_headroom(
    ctx: StageContext, shaped: dict[str, Any], reward: RewardFn, reward_fn: RewardFn | None
) -> dict[str, Any]:
    """The shaped train (and held-out) datasets cut to the prompts with headroom; the selection is
    recorded under ``dataset.headroom`` in ``stage.json``."""
    from alignment.rl.headroom import choose_prompts, headroom_identity
    from alignment.rl.prompts import encode_prompts
    from alignment.stages.ppo.models import eos_token_ids

    cfg: OnlineRLConfig = ctx.cfg
    encode = dict(max_prompt_tokens=cfg.max_length - cfg.max_new_tokens, system=None, chat=cfg.chat_template)
    sets = {name: encode_prompts(ctx.tokenizer, list(ds), **encode) for name, ds in shaped.items()}
    for name, ds in shaped.items():  # the shaped rows already fit; the indices must line up
        if len(sets[name]) != len(ds):
            raise SafealignError(f"{cfg.dataset}: {name} prompts changed length when re-encoded for headroom")
    kept, kept_heldout, record = choose_prompts(
        cfg,
        ctx.model,
        ctx.tokenizer,
        reward,
        sets["train"],
        sets.get("eval"),
        run_dir=Path(ctx.args.output_dir).parent,
        identity=headroom_identity(cfg, ctx.source, reward, reward_fn),
        eos_token_ids=eos_token_ids(ctx.tokenizer, ctx.model),
    )
    ctx.data.info.update(headroom=record, train_rows=len(kept))
    out = dict(shaped, train=shaped["train"].select(kept))
    if kept_heldout is not None:
        out["eval"] = shaped["eval"].select(kept_heldout)
    return out


class HeldoutReward:
    """The held-out reward of the starting model (scored before training) and of the trained one, paired
    over prompts, with the same sampling seed as the PPO stage; the KL is measured against a fresh copy
    of the starting model."""

    def __init__(self) -> None:
        self.ctx: StageContext | None = None
        self.prompts: Any = None
        self.reward: RewardFn | None = None
        self.base: list[float] = []

    def _encode(self, ctx: StageContext, eval_ds: Any) -> Any:
        from alignment.rl.prompts import encode_prompts

        cfg = ctx.cfg
        limit = cfg.max_length - cfg.max_new_tokens
        return encode_prompts(ctx.tokenizer, list(eval_ds), max_prompt_tokens=limit, chat=cfg.chat_template)

    def _score(self, lm: Any, reference: Any) -> Any:
        from alignment.rl.scoring import score_as_stage
        from alignment.stages.ppo.models import eos_token_ids

        assert self.ctx is not None and self.reward is not None
        cfg, tokenizer, eos = self.ctx.cfg, self.ctx.tokenizer, eos_token_ids(self.ctx.tokenizer, lm)
        indices = range(len(self.prompts))
        return score_as_stage(
            cfg,
            lm,
            tokenizer,
            self.prompts,
            indices,
            self.reward,
            eos,
            samples=cfg.eval_samples,
            seed=cfg.seed + 7919,
            reference=reference,
        )

    def start(self, ctx: StageContext, eval_ds: Any, reward: RewardFn) -> None:
        """Score the starting model (``ctx.model``, before TRL wraps or trains it)."""
        self.ctx, self.reward = ctx, reward
        self.prompts = self._encode(ctx, eval_ds)
        self.base = self._score(ctx.model, None).per_prompt().tolist()

    def finish(self, trainer: Any) -> dict[str, Any]:
        """``eval_reward_start``/``_end``, ``eval_kl_end``, ``eval_kl_per_token_end``, ``eval_prompts`` and
        the paired ``eval_reward_change`` (main process; empty without held-out prompts)."""
        from contextlib import nullcontext

        from alignment.rl.scoring import heldout_summary, paired_change

        if self.ctx is None or not self.base or not trainer.accelerator.is_main_process:
            return {}
        ctx = self.ctx
        model = trainer.accelerator.unwrap_model(trainer.model)
        reference = load_causal_lm(ctx.source, ctx.precision, trust_remote_code=ctx.cfg.trust_remote_code)
        reference.requires_grad_(False).eval().to(next(model.parameters()).device)
        result = self._score(model, lambda: nullcontext(reference))
        trained = result.per_prompt().tolist()
        summary = heldout_summary(trained, result.kl.sum(1), result.lengths.sum(1), ctx.cfg.eval_samples)
        return {
            "eval_reward_start": round(sum(self.base) / len(self.base), 6),
            "eval_reward_end": round(summary["eval_reward"], 6),
            "eval_kl_end": round(summary["eval_kl"], 6),
            "eval_kl_per_token_end": round(summary["eval_kl_per_token"], 6),
            "eval_prompts": summary["eval_prompts"],
            "eval_reward_change": paired_change(np.array(self.base), np.array(trained), seed=ctx.cfg.seed),
        }
