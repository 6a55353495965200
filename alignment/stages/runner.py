"""The driver of the TRL stages (SFT, DPO, GRPO, RLOO): decide (skip/resume/start), load, train,
evaluate, save, record."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import atomic_dir
from alignment.paths import runs_dir
from alignment.rl.rollout import GuardTripped
from alignment.stages.common import (
    Precision,
    StageConfig,
    base_pointer,
    check_trl_args,
    choose_precision,
    load_stage_model,
    model_slug,
    resolve_input_model,
)
from alignment.stages.data import DatasetKind, StageData, load_stage_data
from alignment.stages.progress import FiniteGuard, RichProgress, StepRecorder, first_non_finite, probe_ids
from alignment.stages.record import (
    StageRecord,
    config_hash,
    precision_fields,
    record_head,
    resumed_fields,
)
from alignment.stages.rundir import StageDir, last_complete_checkpoint

# Per-step log keys kept in the stage.json curves (others, e.g. logits/*, stay in the trainer state).
CURVE_KEYS = (
    "loss",
    "learning_rate",
    "grad_norm",
    "mean_token_accuracy",
    "entropy",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
)


@dataclass
class StageContext:
    """Everything a stage's trainer factory needs."""

    cfg: StageConfig
    args: Any
    model: Any
    tokenizer: Any
    peft_config: Any
    data: StageData
    source: Any
    precision: Precision
    callbacks: list[Any]

    def trainer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The arguments every TRL trainer takes from the context; ``overrides`` add or replace some."""
        return {
            "model": self.model,
            "args": self.args,
            "train_dataset": self.data.train,
            "eval_dataset": self.data.eval,
            "processing_class": self.tokenizer,
            "peft_config": self.peft_config,
            "callbacks": self.callbacks,
            **overrides,
        }


@dataclass
class StageSpec:
    """What distinguishes one stage from another for :func:`run_stage`."""

    name: str  # "sft" | "dpo"
    data_kind: DatasetKind
    config_cls: Callable[[], type]  # the TRL config class (imported lazily)
    settings: Callable[[Any, StageData], dict[str, Any]]  # stage-specific TRL config fields
    make_trainer: Callable[[StageContext], Any]
    describe: Callable[[Any, StageData], dict[str, Any]] | None = None  # extra stage.json fields
    final_metrics: Callable[[Any], dict[str, Any]] | None = None  # more metrics from the trained trainer


def default_output_dir(stage: str, cfg: StageConfig) -> Path:
    """``$SAFEALIGN_RUNS/<stage>-<model name>`` (or the config's ``output_dir``)."""
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser()
    return runs_dir() / f"{stage}-{model_slug(cfg.model)}"


def common_settings(
    cfg: StageConfig, precision: Precision, sd: StageDir, has_eval: bool, fresh: bool
) -> dict:
    """TRL/transformers training arguments every stage sets the same way."""
    eval_every = has_eval and cfg.eval_steps is not None
    return {
        "output_dir": str(sd.checkpoints),
        "run_name": sd.root.name,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        "activation_checkpointing": cfg.gradient_checkpointing,
        "dataloader_pin_memory": precision.device == "cuda",
        "use_cpu": precision.device == "cpu",  # also makes torchrun workers on a CPU machine one gloo group
        "logging_steps": cfg.logging_steps,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # a NaN loss is logged as NaN (FiniteGuard stops), never hidden
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "eval_strategy": "steps" if eval_every else "no",
        "eval_steps": cfg.eval_steps if eval_every else None,
        "eval_on_start": has_eval and fresh,
        "report_to": cfg.report_to,
        "disable_tqdm": True,
        "trust_remote_code": cfg.trust_remote_code,
    }


def build_training_args(config_cls: type, ours: dict[str, Any], trl_args: dict[str, Any] | None) -> Any:
    extra = check_trl_args(trl_args, config_cls, ours)
    try:
        return config_cls(**ours, **extra)
    except (ValueError, TypeError) as exc:
        raise SafealignError(f"invalid training settings for {config_cls.__name__}: {exc}") from exc


def curves(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Train and eval curves from the trainer's log history (complete across resumes).

    >>> curves([{"loss": 2.0, "step": 1, "epoch": 0.1}, {"eval_loss": 1.5, "step": 1}])
    {'train': [{'step': 1, 'epoch': 0.1, 'loss': 2.0}], 'eval': [{'step': 1, 'eval_loss': 1.5}]}
    """
    train, evals = [], []
    for entry in log_history:
        if "loss" in entry:
            point = {"step": entry.get("step"), "epoch": entry.get("epoch")}
            point.update({k: entry[k] for k in CURVE_KEYS if k in entry})
            train.append(point)
        elif "eval_loss" in entry:
            point = {"step": entry.get("step")}
            point.update(
                {
                    k: v
                    for k, v in entry.items()
                    if k.startswith("eval_") and "runtime" not in k and "per_second" not in k
                }
            )
            evals.append(point)
    return {"train": train, "eval": evals}


def merge_adapter(adapter_dir: Path, base: str, target: Path, trust_remote_code: bool) -> None:
    """Load the base at its stored dtype, apply the adapter from disk, merge, and save full weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignment.models import resolve_model

    base_model = AutoModelForCausalLM.from_pretrained(
        resolve_model(base).path, dtype="auto", trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)


def point_adapter_at(adapter_dir: Path, pointer: str) -> None:
    """Make a saved adapter name its base by ``pointer`` (what :func:`base_pointer` gives for the input)."""
    config_file = adapter_dir / "adapter_config.json"
    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = pointer
    config_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_final_model(trainer: Any, ctx: StageContext, sd: StageDir, is_main: bool) -> dict[str, Any]:
    """Write ``model/`` atomically: full weights, or the adapter with a pointer to its base (or merged)."""
    staging = sd.root / ".model.partial"
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every rank: sharded (ZeRO-3, FSDP) weights are gathered here
    record: dict[str, Any] = {}
    if is_main:
        ctx.tokenizer.save_pretrained(staging)
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the checkpoints keep it
        adapter_config = staging / "adapter_config.json"
        with atomic_dir(sd.model) as tmp:
            if adapter_config.is_file():
                shutil.rmtree(staging / "ref", ignore_errors=True)  # TRL's frozen copy of a continued adapter
                pointer = base_pointer(ctx.source)
                point_adapter_at(staging, pointer)
                record = {"saved_as": "adapter", "base": pointer}
                if ctx.cfg.merge_adapter:
                    merge_adapter(staging, pointer, tmp, ctx.cfg.trust_remote_code)
                    ctx.tokenizer.save_pretrained(tmp)
                    record = {"saved_as": "merged", "base": pointer}
            else:
                record = {"saved_as": "full"}
            if record["saved_as"] != "merged":
                for item in staging.iterdir():
                    os.replace(item, tmp / item.name)
        shutil.rmtree(staging, ignore_errors=True)
        record["path"] = str(sd.model)
    trainer.accelerator.wait_for_everyone()
    return record


def broadcast_from_main(make: Callable[[], Any], state: Any) -> Any:
    """Run ``make`` on the main process only and share its result (or its SafealignError) with all ranks."""
    from accelerate.utils import broadcast_object_list

    payload: list[Any] = [None]
    if state.is_main_process:
        try:
            payload = [make()]
        except SafealignError as exc:
            payload = [exc]
    if state.num_processes > 1:
        broadcast_object_list(payload)
    if isinstance(payload[0], SafealignError):
        raise payload[0]
    return payload[0]


def check_rows_kept(prepared: Any, data: StageData, max_length: int) -> int:
    """TRL drops rows whose prompt alone fills ``max_length``; stop clearly when none are left."""
    kept = len(prepared)
    if kept == 0:
        raise SafealignError(
            f"{data.info['path']}: all {data.info['train_rows']} training rows lose their whole completion "
            f"at max_length={max_length} (the prompt alone is that long): raise max_length"
        )
    if kept < data.info["train_rows"]:
        from alignment.console import err

        err.print(
            f"[yellow]warning[/]: {data.info['train_rows'] - kept} of {data.info['train_rows']} training "
            f"rows dropped: their prompt alone fills max_length={max_length}"
        )
    return kept


def _quiet_libraries() -> None:
    """The stage draws its own progress bar; silence the libraries' bars and one unactionable warning."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    # TRL 1.16 calls a transformers method that transformers 5.23 deprecates; nothing a user can act on
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning
    )


def run_stage(spec: StageSpec, cfg: StageConfig, out_dir: str | Path | None = None) -> Path:
    """Train one stage into ``out_dir`` and return the saved model directory (``out_dir/model``).

    Everything that can reject the input (model, dataset, settings) is checked before anything is
    written to the run directory, so bad input leaves no partial output and a previous one intact.
    """
    from accelerate import PartialState

    _quiet_libraries()
    precision = choose_precision(cfg.precision, cfg.adapter)
    # The same process-group view the trainer will take (on CPU, torchrun workers form a gloo group).
    state = PartialState(cpu=precision.device == "cpu")
    sd = StageDir(Path(out_dir) if out_dir is not None else default_output_dir(spec.name, cfg))
    with locked_stage_dir(sd, state.is_main_process):
        return _run_locked(spec, cfg, sd, precision, state)


@contextmanager
def locked_stage_dir(sd: StageDir, is_main: bool) -> Iterator[None]:
    """The main process holds the run directory's lock while the stage decides, trains and saves."""
    from alignment.runs import lock_run_dir

    sd.check_is_folder()
    with lock_run_dir(sd.root) if is_main else nullcontext():
        yield


def _run_locked(spec: StageSpec, cfg: StageConfig, sd: StageDir, precision: Precision, state: Any) -> Path:
    from alignment.console import err

    is_main = state.is_main_process
    chash = config_hash(cfg)
    decision = broadcast_from_main(
        lambda: sd.decide(
            spec.name, chash, cfg.hashed_items(), resume=cfg.resume, force=cfg.force, defer_clear=True
        ),
        state,
    )
    if decision.action == "skip":
        if is_main:
            err.print(f"[green]{decision.note}[/]")
        return sd.model
    if decision.checkpoint is not None:
        check_checkpoint_files(decision.checkpoint)
    source = resolve_input_model(cfg.model)
    loaded: dict[str, StageData] = {}

    def load_on_main() -> bool:
        loaded["data"] = load_config_data(cfg, spec.data_kind, sd)
        return True

    broadcast_from_main(load_on_main, state)  # the main process builds a spec'd dataset; the others read it
    data = loaded["data"] if is_main else load_config_data(cfg, spec.data_kind, sd)
    ours = common_settings(cfg, precision, sd, data.eval is not None, decision.action == "start")
    ours.update(spec.settings(cfg, data))
    args = build_training_args(spec.config_cls(), ours, cfg.trl_args)
    if is_main and decision.note:
        err.print(f"[dim]{decision.note}[/]")
    model_dir = _train(spec, cfg, sd, decision, precision, source, data, args, is_main)
    if is_main:
        err.print(f"[green]{spec.name} finished[/]: model in {model_dir}")
    return model_dir


def _train(
    spec: StageSpec,
    cfg: StageConfig,
    sd: StageDir,
    decision: Any,
    precision: Precision,
    source: Any,
    data: StageData,
    args: Any,
    is_main: bool,
) -> Path:
    """Load, train, evaluate and save, keeping ``stage.json`` and the run manifest up to date."""
    import torch

    previous = (sd.read() or {}) if decision.action == "resume" else {}
    stage_record = StageRecord(
        sd,
        {
            **record_head(spec.name, cfg, source),
            "adapter": {
                "mode": cfg.adapter,
                "continues_input_adapter": source.kind == "adapter" and cfg.adapter != "full",
            },
            "precision": precision_fields(precision),
            "dataset": data.info,
            **(spec.describe(cfg, data) if spec.describe is not None else {}),
            **resumed_fields(previous),
        },
        is_main=is_main,
        from_step=int(decision.checkpoint.name.split("-")[-1]) if decision.checkpoint else 0,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    recorder = StepRecorder(on_checkpoint=stage_record.on_checkpoint)
    had_checkpoints = sd.checkpoints.exists()
    try:
        model, tokenizer, peft_config = load_stage_model(cfg, source, precision)
        check_finite_model(model, cfg.model)
        guard = FiniteGuard(probe_ids(tokenizer))
        callbacks = [RichProgress(f"{spec.name} {sd.root.name}"), recorder, guard]
        ctx = StageContext(cfg, args, model, tokenizer, peft_config, data, source, precision, callbacks)
        trainer = spec.make_trainer(ctx)
        stage_record.fields["dataset"]["train_rows_used"] = check_rows_kept(
            trainer.train_dataset, data, cfg.max_length
        )
    except BaseException:
        if not had_checkpoints and sd.checkpoints.is_dir() and not any(sd.checkpoints.iterdir()):
            sd.checkpoints.rmdir()  # the trainer creates its output folder up front
        raise
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if decision.checkpoint is not None:
        stop_at_max_steps(trainer)

    # The input checks out: only now does the run directory change.
    if is_main and decision.clear:
        sd.clear()
    stage_record.open(cfg)
    trainer.accelerator.wait_for_everyone()
    try:
        output = trainer.train(
            resume_from_checkpoint=str(decision.checkpoint) if decision.checkpoint else None
        )
        state = trainer.state
        # transformers reports a loss of 0.0 for a segment that trained no step (resumed at max_steps)
        trained = state.global_step > stage_record.segment["from_step"]
        metrics = {"train_loss_segment": output.training_loss} if trained else {}
        if trainer.eval_dataset is not None:  # GRPO and RLOO leave TRL's evaluation out by default
            metrics.update(trainer.evaluate())
        if spec.final_metrics is not None:
            metrics.update(spec.final_metrics(trainer))
        model_record = save_final_model(trainer, ctx, sd, is_main)
        curve = curves(state.log_history)
        if curve["train"]:
            metrics.update(
                first_logged_loss=curve["train"][0]["loss"], last_logged_loss=curve["train"][-1]["loss"]
            )
        stage_record.complete(
            spec.name,
            global_step=state.global_step,
            max_steps=state.max_steps,
            metrics={k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
            curves=curve,
            model=model_record,
            step_time=recorder.summary(),
        )
    except GuardTripped as exc:  # a failing reward in GRPO/RLOO: stop, naming the checkpoint to resume from
        kept = last_complete_checkpoint(sd.checkpoints)
        step = trainer.state.global_step
        stage_record.save(
            status="stopped", stopped={"step": step, "reason": str(exc), "checkpoint": str(kept)}
        )
        stage_record.fail(exc)
        where_kept = f"last checkpoint {kept}" if kept else "no checkpoint saved yet"
        raise SafealignError(f"{spec.name} stopped at step {step}: {exc}; {where_kept}") from exc
    except BaseException as exc:
        stage_record.fail(exc)
        raise
    return sd.model


def stop_at_max_steps(trainer: Any) -> None:
    """Give the trainer no more batches once ``max_steps`` is reached.

    Works around transformers 5.24 (``Trainer._run_epoch``), which checks ``max_steps`` only after a
    step: resumed from a checkpoint at the last step, in the middle of an epoch (GRPO and RLOO usually
    are: ``max_steps`` ends their first epoch early), it trained one step more. With no batches the
    rest of that epoch is empty and the trainer finishes as usual (weights and state from the checkpoint).
    """
    fetch = trainer.get_batch_samples

    def get_batch_samples(epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        if trainer.state.global_step >= trainer.state.max_steps:
            return [], None
        return fetch(epoch_iterator, num_batches, device)

    trainer.get_batch_samples = get_batch_samples


def check_checkpoint_files(checkpoint: Path) -> None:
    """Open every pickled state of a checkpoint (optimiser, scheduler, random state) as tensors and plain
    values only, before the trainer resumes from it: a file holding other Python objects is refused by
    name and never unpickled (mapped, so no tensor data is read)."""
    import pickle

    import torch
    from transformers.trainer_pt_utils import safe_globals  # numpy arrays and dtypes, as the trainer allows

    for file in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
        try:
            with safe_globals():
                try:
                    torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # an old (non-zip) file cannot be mapped
                    torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise SafealignError(
                f"{file}: refused to load: it holds Python objects, not only tensors (a checkpoint safealign "
                f"wrote never does); remove {checkpoint.name} to resume from an earlier one, or --force to "
                "start over"
            ) from exc


def check_finite_model(model: Any, spec: str) -> None:
    """Refuse an input model whose weights hold NaN or inf: training from it cannot produce a model."""
    bad = first_non_finite(model, trainable_only=False)
    if bad is not None:
        raise SafealignError(f"model {spec}: weight {bad} holds NaN or inf values; it cannot be trained")


def load_config_data(cfg: StageConfig, kind: DatasetKind, sd: StageDir) -> StageData:
    """The stage's train and held-out rows as its config selects them (a builder spec builds into ``sd``)."""
    return load_stage_data(
        cfg.dataset,
        kind,
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        max_train_samples=cfg.max_train_samples,
        max_eval_samples=cfg.max_eval_samples,
        seed=cfg.seed,
        build_dir=sd.dataset,
    )
