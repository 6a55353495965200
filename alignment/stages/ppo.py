"""PPO with callable rewards: ``run_ppo(config, out_dir) -> out_dir/model``.

safealign's own trainer on transformers + accelerate (TRL 1.16 has none). Each step samples one
completion per prompt, scores it with a reward callable of TRL's signature, adds a per-token KL penalty
to the reference policy, estimates advantages with GAE and runs several epochs of clipped PPO updates.
The algorithm and every knob are described in ``docs/ppo.md``; the pieces live in :mod:`alignment.rl`.

The run directory has the layout of the other stages (``stage.json``, ``manifest.json``,
``checkpoints/checkpoint-N``, ``model/``) plus ``value_head.safetensors``.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

import alignment.stages.prompt_data  # noqa: F401  (registers the `prompt` dataset kind)
from alignment.errors import SafealignError
from alignment.io import atomic_dir, atomic_write_bytes, atomic_write_json
from alignment.rl.kl import KL_ESTIMATORS, KLController
from alignment.rl.prompts import PromptSet, batch_indices, encode_prompts, left_pad
from alignment.rl.rollout import (
    RewardFn,
    reference_logprobs,
    response_mask,
    reward_components,
    rollout_statistics,
    sample_responses,
    score_completions,
)
from alignment.rl.update import GuardTripped, PPOHyperparameters, Rollouts, ppo_update
from alignment.rl.value_head import PolicyWithValue
from alignment.stages.common import (
    StageConfig,
    base_pointer,
    choose_precision,
    load_causal_lm,
    load_stage_model,
    resolve_input_model,
)
from alignment.stages.data import load_stage_data
from alignment.stages.rundir import StageDir
from alignment.stages.runner import (
    _broadcast,
    _merge_adapter,
    _now,
    config_hash,
    default_output_dir,
    peak_memory,
)

STAGE = "ppo"
VALUE_HEAD_FILE = "value_head.safetensors"
REFERENCE_ADAPTER = "reference"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PPOStageConfig(StageConfig):
    """The PPO stage: the shared stage settings plus rollout, reward, KL and PPO-update knobs.

    Shared settings keep their meaning: ``per_device_train_batch_size`` rollouts per forward/backward
    pass, times ``gradient_accumulation_steps`` per optimiser step (one PPO minibatch);
    ``max_steps`` counts PPO iterations (rollout + update); ``max_length`` caps prompt plus completion.
    """

    reward: dict[str, Any] | str | None = field(
        default=None,
        metadata=_help(
            "reward spec for reward.registry.build_reward: a name (`safealign reward list`), "
            "'module:function', 'file.py:function', a YAML file, or a mapping with components"
        ),
    )
    rollout_batch_size: int = field(
        default=16, metadata=_help("prompts sampled per PPO iteration per device")
    )
    ppo_epochs: int = field(default=4, metadata=_help("passes over each batch of rollouts"))
    max_new_tokens: int = field(default=64, metadata=_help("longest completion sampled"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature (log-probs use the same)"))
    kl_coef: float = field(
        default=0.05, metadata=_help("KL penalty coefficient beta (initial value if adaptive)")
    )
    kl_estimator: Literal["k1", "k2", "k3"] = field(
        default="k1", metadata=_help("per-token KL estimator in the penalty: k1 (log ratio), k2, k3")
    )
    kl_target: float | None = field(
        default=None, metadata=_help("adapt beta towards this KL per completion (nats); unset: fixed beta")
    )
    kl_horizon: float = field(default=10000.0, metadata=_help("adaptive KL horizon (rollouts)"))
    kl_ceiling: float | None = field(
        default=50.0, metadata=_help("stop when the mean KL per completion exceeds this (nats); unset: never")
    )
    gamma: float = field(default=1.0, metadata=_help("discount factor in GAE"))
    lam: float = field(default=0.95, metadata=_help("GAE lambda"))
    clip_range: float = field(default=0.2, metadata=_help("PPO policy ratio clip epsilon"))
    clip_range_value: float = field(
        default=0.2, metadata=_help("value prediction clip around the old values")
    )
    vf_coef: float = field(default=0.1, metadata=_help("weight of the value loss"))
    whiten_rewards: bool = field(
        default=False, metadata=_help("scale token rewards to unit variance before GAE")
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    missing_eos_penalty: float | None = field(
        default=None, metadata=_help("subtract this from the reward of completions that never end")
    )
    system_prompt: str | None = field(default=None, metadata=_help("system message added to every prompt"))
    chat_template: bool | None = field(
        default=None,
        metadata=_help("render prompts with the chat template (default: when the tokenizer has one)"),
    )
    learning_rate: float = field(default=1e-5, metadata=_help("peak learning rate"))
    lr_scheduler_type: str = field(
        default="constant", metadata=_help("learning-rate schedule (transformers name)")
    )
    lora_dropout: float = field(
        default=0.0, metadata=_help("dropout on the LoRA branch (PPO turns all dropout off; keep 0)")
    )
    max_eval_samples: int | None = field(
        default=64, metadata=_help("held-out prompts scored before and after training (and every eval_steps)")
    )
    save_steps: int = field(default=10, metadata=_help("write a checkpoint every N PPO iterations"))
    logging_steps: int = field(default=1, metadata=_help("log statistics every N PPO iterations"))

    def __post_init__(self) -> None:
        if self.trl_args:
            raise ValueError("trl_args does not apply to PPO, which is safealign's own trainer")
        super().__post_init__()
        for name in ("rollout_batch_size", "ppo_epochs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        minibatch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.rollout_batch_size % minibatch:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                f"per_device_train_batch_size x gradient_accumulation_steps ({minibatch})"
            )
        if self.max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_length ({self.max_length})"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (PPO samples), got {self.temperature}")
        for name in ("kl_coef", "vf_coef", "max_grad_norm", "clip_range", "clip_range_value"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}"
            )
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        for name in ("kl_target", "kl_ceiling"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 or unset, got {getattr(self, name)}")
        if self.kl_horizon <= 0:
            raise ValueError(f"kl_horizon must be > 0, got {self.kl_horizon}")

    def hyperparameters(self) -> PPOHyperparameters:
        return PPOHyperparameters(
            gamma=self.gamma,
            lam=self.lam,
            clip_range=self.clip_range,
            clip_range_value=self.clip_range_value,
            vf_coef=self.vf_coef,
            ppo_epochs=self.ppo_epochs,
            mini_batch_size=self.per_device_train_batch_size * self.gradient_accumulation_steps,
            micro_batch_size=self.per_device_train_batch_size,
            max_grad_norm=self.max_grad_norm,
            temperature=self.temperature,
            whiten_rewards=self.whiten_rewards,
            kl_estimator=self.kl_estimator,
        )


# ------------------------------------------------------------------------------------------ models


@dataclass
class Models:
    """The trained policy (with its value head), how to get reference log-probs, and the tokenizer."""

    policy: PolicyWithValue
    tokenizer: Any
    reference: Any  # a frozen LM, or None when the reference is the base under the (disabled) adapters
    reference_adapter: bool  # the reference is a frozen copy of a continued adapter
    saved_as_adapter: bool

    def peft_model(self) -> Any:
        return self.policy.policy

    @contextmanager
    def reference_lm(self) -> Iterator[Any]:
        """The LM whose log-probs define the reference policy (no second copy under LoRA)."""
        if self.reference is not None:
            yield self.reference
        elif self.reference_adapter:
            peft = self.peft_model()
            peft.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
            try:
                yield peft
            finally:
                peft.set_adapter("default")
        else:
            with self.peft_model().disable_adapter():
                yield self.peft_model()


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: PPO's ratios need the same log-probs in rollout and update."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_models(cfg: PPOStageConfig, source: Any, precision: Any) -> Models:
    """Policy (+ value head) and reference from disk; LoRA keeps a single copy of the base weights."""
    model, tokenizer, peft_config = load_stage_model(cfg, source, precision)
    reference = None
    reference_adapter = False
    if cfg.adapter == "full":
        reference = load_causal_lm(source, precision, trust_remote_code=cfg.trust_remote_code)
        reference.requires_grad_(False).eval()
    elif peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    else:  # continuing a LoRA adapter: the reference is a frozen copy of that adapter
        model.load_adapter(source.path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        model.set_adapter("default")
        reference_adapter = True
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = PolicyWithValue(model)
    disable_dropout(policy)
    return Models(policy, tokenizer, reference, reference_adapter, saved_as_adapter=cfg.adapter != "full")


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS plus the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


# --------------------------------------------------------------------------------------- rollouts


@dataclass
class Sampled:
    rollouts: Rollouts
    completions: list[Any]
    ended: torch.Tensor
    raw_scores: list[float]
    components: dict[str, float]


def collect(
    models: Models,
    accelerator: Any,
    cfg: PPOStageConfig,
    reward_fn: RewardFn,
    eos_ids: list[int],
    prompts: list[Any],
    token_ids: list[list[int]],
    columns: dict[str, list[Any]],
) -> Sampled:
    """Sample, score and evaluate one batch of prompts (no gradients)."""
    tokenizer = models.tokenizer
    device = accelerator.device
    query_ids, query_mask = (t.to(device) for t in left_pad(token_ids, tokenizer.pad_token_id))
    policy = models.policy
    with torch.no_grad(), accelerator.autocast():
        responses = sample_responses(
            policy.policy,
            query_ids,
            query_mask,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_ids=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        mask, ended = response_mask(responses, eos_ids)
        responses = responses.masked_fill(mask == 0, tokenizer.pad_token_id)
        completion_ids = [row[m.bool()].tolist() for row, m in zip(responses, mask, strict=True)]
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        completions: list[Any] = [
            t if isinstance(p, str) else [{"role": "assistant", "content": t}]
            for p, t in zip(prompts, texts, strict=True)
        ]
        try:
            raw = score_completions(reward_fn, prompts, completions, completion_ids, **columns)
        except ValueError as exc:
            raise SafealignError(f"reward: {exc}") from exc
        scores = torch.tensor(raw, dtype=torch.float32, device=device)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~ended).float()
        chunk = cfg.per_device_train_batch_size
        logprobs, values, entropy = rollout_statistics(
            policy, query_ids, query_mask, responses, mask, cfg.temperature, chunk
        )
        with models.reference_lm() as ref:
            ref_logprobs = reference_logprobs(
                ref, query_ids, query_mask, responses, mask, cfg.temperature, chunk
            )
    rollouts = Rollouts(
        query_ids, query_mask, responses, mask, logprobs, ref_logprobs, values, scores, entropy=entropy
    )
    return Sampled(rollouts, completions, ended, raw, reward_components(reward_fn))


def _global_mean(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    """Average per-process statistics over processes (NaN stays NaN)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(tensor, reduction="mean")
    return {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}


def _finite_fraction_problem(accelerator: Any, raw: list[float]) -> str | None:
    bad = torch.tensor([sum(not math.isfinite(v) for v in raw), len(raw)], device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if int(bad[0]):
        return (
            f"the reward function returned NaN/inf (or None) for {int(bad[0])} of {int(bad[1])} completions"
        )
    return None


def evaluate_heldout(
    models: Models,
    accelerator: Any,
    cfg: PPOStageConfig,
    reward_fn: RewardFn,
    eos_ids: list[int],
    data: PromptSet,
) -> dict[str, float]:
    """Mean reward, KL and length of one sampled completion per held-out prompt (sharded over processes)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    indices = list(range(rank, len(data), world))
    total = {"eval_reward": 0.0, "eval_kl": 0.0, "eval_response_length": 0.0}
    count = 0
    torch.manual_seed(cfg.seed + 7919 + rank)  # the same held-out samples before and after training
    from alignment.rl.kl import kl_per_token

    batch = max(cfg.per_device_eval_batch_size, 1)
    for start in range(0, len(indices), batch):
        prompts, token_ids, columns = data.select(indices[start : start + batch])
        sampled = collect(models, accelerator, cfg, reward_fn, eos_ids, prompts, token_ids, columns)
        r = sampled.rollouts
        kl = (kl_per_token(r.logprobs, r.ref_logprobs, cfg.kl_estimator) * r.response_mask).sum(1)
        total["eval_reward"] += float(sum(sampled.raw_scores))
        total["eval_kl"] += float(kl.sum())
        total["eval_response_length"] += float(r.response_mask.sum())
        count += len(prompts)
    keys = sorted(total)
    tensor = torch.tensor([total[k] for k in keys] + [count], dtype=torch.float64, device=accelerator.device)
    if world > 1:
        tensor = accelerator.reduce(tensor, reduction="sum")
    n = max(float(tensor[-1]), 1.0)
    result = {k: float(v) / n for k, v in zip(keys, tensor[:-1].tolist(), strict=True)}
    result["eval_prompts"] = int(tensor[-1])
    return result


# ------------------------------------------------------------------------------------ checkpoints


def trainable_state(policy: PolicyWithValue) -> dict[str, torch.Tensor]:
    """The parameters PPO trains (all weights, or the LoRA adapter + value head), on the CPU."""
    return {name: p.detach().cpu().clone() for name, p in policy.named_parameters() if p.requires_grad}


def save_checkpoint(
    sd: StageDir,
    step: int,
    policy: PolicyWithValue,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    limit: int | None,
) -> Path:
    """Write ``checkpoints/checkpoint-<step>`` atomically (trainer_state.json last) and rotate old ones."""
    target = sd.checkpoints / f"checkpoint-{step}"
    with atomic_dir(target) as tmp:
        torch.save(trainable_state(policy), tmp / "trainable.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / TRAINER_STATE, dict(state, step=step))
    from alignment.stages.rundir import checkpoints

    complete = [path for _, path, ok in checkpoints(sd.checkpoints) if ok]
    if limit is not None:
        for old in complete[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, policy: PolicyWithValue, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    import json

    weights = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
    missing = set(trainable_state(policy)) - set(weights)
    if missing:
        raise SafealignError(
            f"{path}: checkpoint does not match this model (missing {sorted(missing)[0]!r} and "
            f"{len(missing) - 1} more); resume with the config that wrote it, or --force"
        )
    params = dict(policy.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))


def params_finite(policy: PolicyWithValue) -> bool:
    return all(torch.isfinite(p).all() for p in policy.parameters() if p.requires_grad)


def save_final(sd: StageDir, models: Models, cfg: PPOStageConfig, source: Any) -> dict[str, Any]:
    """Write ``model/`` (full weights, or the adapter pointing at its base, or merged) and the value head."""
    import json

    from safetensors.torch import save as safetensors_bytes

    policy = models.policy
    record: dict[str, Any]
    with atomic_dir(sd.model) as tmp:
        if models.saved_as_adapter:
            pointer = base_pointer(source)
            adapter_dir = tmp / "adapter" if cfg.merge_adapter else tmp
            policy.policy.save_pretrained(adapter_dir, selected_adapters=["default"])
            config_file = adapter_dir / "adapter_config.json"
            data = json.loads(config_file.read_text(encoding="utf-8"))
            data["base_model_name_or_path"] = pointer
            config_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            record = {"saved_as": "adapter", "base": pointer}
            if cfg.merge_adapter:
                _merge_adapter(adapter_dir, pointer, tmp, cfg.trust_remote_code)
                shutil.rmtree(adapter_dir)
                record = {"saved_as": "merged", "base": pointer}
        else:
            policy.policy.save_pretrained(tmp, safe_serialization=True)
            record = {"saved_as": "full"}
        models.tokenizer.save_pretrained(tmp)
    head = {k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()}
    atomic_write_bytes(sd.root / VALUE_HEAD_FILE, safetensors_bytes(head))
    record["path"] = str(sd.model)
    record["value_head"] = str(sd.root / VALUE_HEAD_FILE)
    return record


# ------------------------------------------------------------------------------------------ display

# (key, column title, format) of the live table and the printed log lines.
COLUMNS = (
    ("step", "step", "{:.0f}"),
    ("reward", "reward", "{:.4f}"),
    ("kl", "KL", "{:.3f}"),
    ("kl_coef", "beta", "{:.3g}"),
    ("entropy", "entropy", "{:.3f}"),
    ("clip_fraction", "clip", "{:.3f}"),
    ("approx_kl", "approx KL", "{:.4f}"),
    ("value_loss", "V loss", "{:.4f}"),
    ("explained_variance", "expl var", "{:.2f}"),
    ("response_length", "length", "{:.1f}"),
    ("step_time_s", "s/step", "{:.2f}"),
)


def format_row(row: dict[str, Any]) -> list[str]:
    """Table cells for one log row.

    >>> format_row({"step": 3, "reward": 0.5, "kl": float("nan")})[:3]
    ['3', '0.5000', 'nan']
    """
    cells = []
    for key, _, fmt in COLUMNS:
        value = row.get(key)
        cells.append(fmt.format(value) if isinstance(value, (int, float)) else "")
    return cells


class LiveLog:
    """A progress bar over PPO iterations with a live table of the latest logged steps (main process)."""

    def __init__(self, title: str, total: int, done: int, enabled: bool, keep: int = 8) -> None:
        from alignment.cli.console import err

        self.console = err
        self.enabled = enabled
        self.title, self.total, self.keep = title, total, keep
        self.rows: list[dict[str, Any]] = []
        self.live = None
        self.progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task(title, total=total, completed=done)
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=2)
            self.live.start()
        elif done:
            self.console.print(f"{title}: resumed at step {done}/{total}")

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for _, title, _ in COLUMNS:
            table.add_column(title, justify="right")
        for row in self.rows[-self.keep :]:
            table.add_row(*format_row(row))
        return Group(self.progress, table)

    def advance(self, step: int, row: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        self.progress.update(self.task, completed=step)
        if row is not None:
            self.rows.append(row)
            if self.live is None:
                cells = format_row(row)
                self.console.print(
                    f"{self.title} "
                    + "  ".join(f"{t} {c}" for (_, t, _), c in zip(COLUMNS, cells, strict=True) if c)
                )
        if self.live is not None:
            self.live.update(self._render())

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


# --------------------------------------------------------------------------------------------- stage


def _load_prompts(
    cfg: PPOStageConfig, sd: StageDir, tokenizer: Any
) -> tuple[PromptSet, PromptSet | None, dict]:
    data = load_stage_data(
        cfg.dataset,
        "prompt",
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        max_train_samples=cfg.max_train_samples,
        max_eval_samples=cfg.max_eval_samples,
        seed=cfg.seed,
        build_dir=sd.dataset,
    )
    limit = cfg.max_length - cfg.max_new_tokens
    encode = dict(max_prompt_tokens=limit, system=cfg.system_prompt, chat=cfg.chat_template)
    train = encode_prompts(tokenizer, list(data.train), **encode)
    if not len(train):
        raise SafealignError(
            f"{cfg.dataset}: every prompt is longer than max_length - max_new_tokens = {limit} tokens; "
            "raise max_length or lower max_new_tokens"
        )
    heldout = encode_prompts(tokenizer, list(data.eval), **encode) if data.eval is not None else None
    info = dict(data.info, train_prompts=len(train), train_dropped_too_long=train.dropped)
    if heldout is not None:
        info.update(eval_prompts=len(heldout), eval_dropped_too_long=heldout.dropped)
    return train, (heldout if heldout is not None and len(heldout) else None), info


def _build_reward(cfg: PPOStageConfig, reward_fn: RewardFn | None) -> RewardFn:
    if reward_fn is not None:
        return reward_fn
    if cfg.reward is None or cfg.reward == "":
        raise SafealignError(
            "no reward given: set `reward:` in the recipe (or --reward NAME); see docs/ppo.md"
        )
    from reward.registry import build_reward

    return build_reward(cfg.reward, source="reward")


def total_steps(cfg: PPOStageConfig, n_prompts: int, world_size: int) -> int:
    """``max_steps``, or enough iterations to see every prompt ``num_train_epochs`` times.

    >>> total_steps(PPOStageConfig(max_steps=-1, num_train_epochs=2, rollout_batch_size=8), 20, 1)
    5
    """
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_train_epochs * n_prompts / (cfg.rollout_batch_size * world_size)))


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank) % (2**63 - 1)


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
        for key in ("eval_reward", "eval_kl"):
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

    from alignment.cli.console import err
    from alignment.runs import finish_run, start_run
    from alignment.stages.common import Precision

    cfg = config
    precision: Precision = choose_precision(cfg.precision, cfg.adapter)
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
    is_main = accelerator.is_main_process
    chash = config_hash(cfg)
    hashed = cfg.hashed_items()
    decision = _broadcast(
        lambda: sd.decide(STAGE, chash, hashed, resume=cfg.resume, force=cfg.force), accelerator.state
    )
    if decision.action == "skip":
        if is_main:
            err.print(f"[green]{decision.note}[/]")
        return sd.model
    if is_main and decision.note:
        err.print(f"[dim]{decision.note}[/]")
    source = resolve_input_model(cfg.model)
    previous = (sd.read() or {}) if decision.action == "resume" else {}
    record: dict[str, Any] = {
        "stage": STAGE,
        "status": "running",
        "config": cfg.to_dict(),
        "config_hash": chash,
        "config_hashed": hashed,
        "input_model": {
            "spec": cfg.model,
            "kind": source.kind,
            "path": source.path,
            "base": base_pointer(source),
        },
        "precision": {
            "device": precision.device,
            "name": precision.name,
            "load_dtype": precision.load_dtype,
            "quantized_4bit": False,
        },
        "started_at": previous.get("started_at") or _now(),
        "segments": previous.get("segments", []),
        "last_checkpoint_step": previous.get("last_checkpoint_step"),
        "processes": accelerator.num_processes,
    }
    run = None
    if is_main:
        sd.root.mkdir(parents=True, exist_ok=True)
        sd.write(record)
        run = start_run(sd.root.name, command=sys.argv, config=cfg, seed=cfg.seed, root=sd.root.parent)

    def save_record(**fields: Any) -> None:
        record.update(fields)
        if is_main:
            sd.write(record)

    t0 = time.monotonic()
    previous_segments = list(record["segments"])
    segment: dict[str, Any] = {"started_at": _now(), "from_step": 0}
    live = None
    try:
        reward = _build_reward(cfg, reward_fn)
        torch.manual_seed(cfg.seed)  # value-head and LoRA initialisation
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        models = load_models(cfg, source, precision)
        tokenizer = models.tokenizer
        eos_ids = eos_token_ids(tokenizer, models.peft_model())
        loaded: dict[str, Any] = {}

        def load_on_main() -> bool:
            loaded["data"] = _load_prompts(cfg, sd, tokenizer)
            return True

        _broadcast(load_on_main, accelerator.state)
        train, heldout, data_info = loaded["data"] if is_main else _load_prompts(cfg, sd, tokenizer)
        save_record(dataset=data_info)
        save_record(
            reward={
                "spec": cfg.reward if reward_fn is None else None,
                "callable": getattr(reward, "__name__", type(reward).__name__),
                "info": getattr(reward, "info", None),
            }
        )
        steps = total_steps(cfg, len(train), accelerator.num_processes)
        params = [p for p in models.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=1e-5, weight_decay=cfg.weight_decay)
        from transformers import get_scheduler

        warmup = int(cfg.warmup_steps * steps) if cfg.warmup_steps < 1 else int(cfg.warmup_steps)
        scheduler = get_scheduler(
            cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=steps
        )
        controller = KLController(cfg.kl_coef, target=cfg.kl_target, horizon=cfg.kl_horizon)
        history: list[dict[str, Any]] = []
        evals: list[dict[str, Any]] = []
        start_step = 0
        if decision.checkpoint is not None:
            state = load_checkpoint(decision.checkpoint, models.policy, optimizer, scheduler)
            start_step = int(state["step"])
            controller.value = float(state["kl_coef"])
            history, evals = list(state.get("history", [])), list(state.get("evals", []))
        segment["from_step"] = start_step
        models.policy, optimizer = accelerator.prepare(models.policy, optimizer)
        if models.reference is not None:
            models.reference.to(accelerator.device)
        model = models.policy
        models.policy = accelerator.unwrap_model(model)
        if trackers:
            accelerator.init_trackers(sd.root.name, config={k: str(v) for k, v in cfg.to_dict().items()})
        hp = cfg.hyperparameters()
        step_times: list[float] = []

        def checkpoint(step: int, **extra: Any) -> Path | None:
            path = None
            if is_main:
                state = {"kl_coef": controller.value, "history": history, "evals": evals, **extra}
                path = save_checkpoint(
                    sd, step, models.policy, optimizer, scheduler, state, cfg.save_total_limit
                )
                elapsed = dict(segment, to_step=step, wall_time_s=round(time.monotonic() - t0, 3))
                save_record(last_checkpoint_step=step, segments=previous_segments + [elapsed])
            accelerator.wait_for_everyone()
            return path

        def run_eval(step: int) -> None:
            models.policy.eval()
            result = evaluate_heldout(models, accelerator, cfg, reward, eos_ids, heldout)
            evals.append({"step": step, **{k: round(v, 6) for k, v in result.items()}})
            if is_main:
                err.print(
                    f"[dim]ppo held-out at step {step}: reward {result['eval_reward']:.4f}, "
                    f"KL {result['eval_kl']:.3f} over {result['eval_prompts']} prompts[/]"
                )

        live = LiveLog(f"ppo {sd.root.name}", steps, start_step, enabled=is_main)
        if heldout is not None and start_step == 0 and not evals:
            run_eval(0)
        step = start_step
        while step < steps:
            t_step = time.perf_counter()
            torch.manual_seed(_step_seed(cfg.seed, step, accelerator.process_index))
            generator = torch.Generator().manual_seed(_step_seed(cfg.seed, step, accelerator.process_index))
            indices = batch_indices(
                len(train),
                cfg.rollout_batch_size,
                step,
                cfg.seed,
                accelerator.process_index,
                accelerator.num_processes,
            )
            prompts, token_ids, columns = train.select(indices)
            models.policy.eval()
            sampled = collect(models, accelerator, cfg, reward, eos_ids, prompts, token_ids, columns)
            try:
                problem = _finite_fraction_problem(accelerator, sampled.raw_scores)
                if problem:
                    raise GuardTripped(problem)
                r = sampled.rollouts
                kl_now = _global_mean(
                    accelerator,
                    {"kl": float(((r.logprobs - r.ref_logprobs) * r.response_mask).sum(1).mean())},
                )["kl"]
                if cfg.kl_ceiling is not None and kl_now > cfg.kl_ceiling:
                    raise GuardTripped(
                        f"the KL to the reference ({kl_now:.2f} nats per completion) exceeds "
                        f"kl_ceiling {cfg.kl_ceiling}"
                    )
                models.policy.train()
                stats = ppo_update(
                    model,
                    optimizer,
                    r,
                    controller.value,
                    hp,
                    generator=generator,
                    backward=accelerator.backward,
                    clip_grad=lambda n: accelerator.clip_grad_norm_(params, n),
                    no_sync=(lambda: accelerator.no_sync(model)) if accelerator.num_processes > 1 else None,
                    scheduler=scheduler,
                )
            except GuardTripped as exc:
                reason = str(exc)
                kept = None
                if params_finite(models.policy):
                    existing = sd.checkpoints / f"checkpoint-{step}"
                    kept = (
                        existing if (existing / TRAINER_STATE).is_file() else checkpoint(step, stopped=reason)
                    )
                else:
                    from alignment.stages.rundir import last_complete_checkpoint

                    kept = last_complete_checkpoint(sd.checkpoints)
                where_kept = f"checkpoint kept at {kept}" if kept else "no checkpoint could be kept"
                save_record(
                    status="stopped", stopped={"step": step, "reason": reason, "checkpoint": str(kept)}
                )
                raise SafealignError(f"PPO stopped at step {step}: {reason}; {where_kept}") from exc
            mask_f = r.response_mask.float()
            local = {
                "reward": float(torch.tensor(sampled.raw_scores).mean()),
                "reward_std": float(torch.tensor(sampled.raw_scores).std())
                if len(sampled.raw_scores) > 1
                else 0.0,
                "score": float(r.scores.mean()),
                "entropy": float((r.entropy * mask_f).sum() / mask_f.sum().clamp(min=1)),
                "response_length": float(mask_f.sum(1).mean()),
                "ended_fraction": float(sampled.ended.float().mean()),
                **{f"reward/{k}": v for k, v in sampled.components.items()},
                **stats,
            }
            row = _global_mean(accelerator, local)
            controller.update(row["kl"], n_steps=cfg.rollout_batch_size * accelerator.num_processes)
            step += 1
            step_times.append(time.perf_counter() - t_step)
            row = {
                "step": step,
                **{k: round(v, 6) for k, v in row.items()},
                "kl_coef": round(controller.value, 8),
                "learning_rate": scheduler.get_last_lr()[0],
                "step_time_s": round(step_times[-1], 4),
            }
            logged = step % cfg.logging_steps == 0 or step == steps
            if logged:
                history.append(row)
                if trackers:
                    accelerator.log(row, step=step)
            live.advance(step, row if logged else None)
            if heldout is not None and cfg.eval_steps and step % cfg.eval_steps == 0 and step < steps:
                run_eval(step)
            if step % cfg.save_steps == 0 or step == steps:
                checkpoint(step)
        live.close()
        if heldout is not None and (not evals or evals[-1]["step"] != steps):
            run_eval(steps)
        model_record = save_final(sd, models, cfg, source) if is_main else {}
        accelerator.wait_for_everyone()
        segment.update(ended_at=_now(), to_step=steps, wall_time_s=round(time.monotonic() - t0, 3))
        segments = previous_segments + [segment]
        times = sorted(step_times[1:] or step_times)
        save_record(
            status="completed",
            ended_at=_now(),
            metrics=_summary(history, evals),
            curves={"train": history, "eval": evals},
            model=model_record,
            steps={"global_step": steps, "max_steps": steps, "resumed_from_step": start_step or None},
            segments=segments,
            wall_time_s=round(sum(s.get("wall_time_s", 0.0) for s in segments), 3),
            step_time={
                "n": len(times),
                "median_s": round(times[len(times) // 2], 4) if times else None,
                "p10_s": round(times[int(0.1 * (len(times) - 1))], 4) if times else None,
                "p90_s": round(times[int(0.9 * (len(times) - 1))], 4) if times else None,
            },
            peak_memory=peak_memory(),
        )
        if trackers:
            accelerator.end_training()
        if run is not None:
            finish_run(run, stage=STAGE, model=str(sd.model))
    except BaseException as exc:
        if live is not None:
            live.close()
        status = record.get("status")
        if status != "stopped":
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        segment.update(ended_at=_now(), wall_time_s=round(time.monotonic() - t0, 3))
        save_record(
            status=status,
            error=f"{type(exc).__name__}: {exc}",
            segments=previous_segments + [segment],
            peak_memory=peak_memory(),
        )
        if run is not None:
            finish_run(run, status, error=f"{type(exc).__name__}: {exc}")
        raise
    if is_main:
        err.print(f"[green]ppo finished[/]: model in {sd.model}")
    return sd.model
