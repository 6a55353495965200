"""What every training stage shares: the base config, precision choice, LoRA/QLoRA and model loading."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignment.errors import SafealignError
from alignment.models import ModelSource, load_tokenizer, resolve_model
from alignment.models.loader import from_pretrained

STAGE_FILE = "stage.json"
MODEL_DIR = "model"

# Config keys that change how a run is driven or reported, not what it computes: they are left out of
# the config hash, so changing them never makes a finished stage look stale.
RUNTIME_KEYS = frozenset(
    {
        "output_dir",
        "resume",
        "force",
        "report_to",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "eval_steps",
    }
)


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class StageConfig:
    """Settings shared by every training stage, SFT, DPO, PPO, GRPO and RLOO (each adds its own)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata=_help(
            "model to train: an alias (`safealign models list`), a checkpoint or LoRA adapter directory, "
            "a hub id, or the run directory of a previous stage"
        ),
    )
    dataset: str = field(
        default="",
        metadata=_help(
            "a built dataset directory (DatasetDict with train/test splits), or a builder spec "
            "'builder:KIND[?key=value&...]' built into the run directory"
        ),
    )
    output_dir: str | None = field(
        default=None, metadata=_help("run directory (default: $SAFEALIGN_RUNS/<stage>-<model name>)")
    )
    train_split: str = field(default="train", metadata=_help("dataset split to train on"))
    eval_split: str | None = field(
        default="test", metadata=_help("held-out split to evaluate on ('none' to skip evaluation)")
    )
    max_train_samples: int | None = field(
        default=None, metadata=_help("train on a seeded random subset of this many rows")
    )
    max_eval_samples: int | None = field(
        default=None, metadata=_help("evaluate on a seeded random subset of this many rows")
    )
    adapter: Literal["full", "lora", "qlora"] = field(
        default="full",
        metadata=_help("full fine-tuning, LoRA, or QLoRA (4-bit base, needs a CUDA GPU and bitsandbytes)"),
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA branch"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata=_help("modules LoRA adapts: 'all-linear' or names such as q_proj v_proj"),
    )
    merge_adapter: bool = field(
        default=False, metadata=_help("save LoRA runs as merged full weights instead of an adapter")
    )
    learning_rate: float = field(default=2e-5, metadata=_help("peak learning rate"))
    lr_scheduler_type: str = field(
        default="linear", metadata=_help("learning-rate schedule (transformers name)")
    )
    warmup_steps: float = field(
        default=0.0, metadata=_help("linear warmup: a number of steps, or a fraction of all steps when < 1")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    per_device_train_batch_size: int = field(default=8, metadata=_help("training batch size per device"))
    per_device_eval_batch_size: int = field(default=8, metadata=_help("evaluation batch size per device"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    num_train_epochs: float = field(
        default=1.0, metadata=_help("epochs to train (ignored when max_steps > 0)")
    )
    max_steps: int = field(default=-1, metadata=_help("optimizer steps to train; -1 = use num_train_epochs"))
    max_length: int = field(
        default=512, metadata=_help("maximum tokens per sequence (longer ones are truncated)")
    )
    seed: int = field(default=0, metadata=_help("seed for initialisation, data order and subsets"))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata=_help("auto: fp32 on CPU, bf16 on GPUs that support it, else fp16")
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("recompute activations in the backward pass (less memory, slower steps)"),
    )
    logging_steps: int = field(default=5, metadata=_help("log loss and metrics every N steps"))
    eval_steps: int | None = field(
        default=None, metadata=_help("evaluate every N steps (default: only once, at the end)")
    )
    save_steps: int = field(default=50, metadata=_help("write a checkpoint every N steps"))
    save_total_limit: int | None = field(default=2, metadata=_help("keep at most this many checkpoints"))
    report_to: list[str] = field(
        default_factory=lambda: ["none"], metadata=_help("trackers to log to: none, tensorboard, wandb, ...")
    )
    trl_args: dict[str, Any] | str | None = field(
        default=None,
        metadata=_help("extra TRL trainer-config fields as a mapping (YAML) or a JSON object (flag)"),
    )
    trust_remote_code: bool = field(default=False, metadata=_help("run code shipped with a hub model"))
    resume: bool = field(
        default=False, metadata=_help("continue an interrupted run from its last checkpoint")
    )
    force: bool = field(
        default=False, metadata=_help("retrain even if the run directory holds a finished stage")
    )

    def __post_init__(self) -> None:
        if isinstance(self.eval_split, str) and self.eval_split.strip().lower() in {"", "none", "null"}:
            self.eval_split = None
        if isinstance(self.trl_args, str):
            try:
                self.trl_args = json.loads(self.trl_args) if self.trl_args.strip() else None
            except json.JSONDecodeError as exc:
                raise ValueError(f"trl_args is not a JSON object ({exc.msg})") from exc
            if self.trl_args is not None and not isinstance(self.trl_args, dict):
                raise ValueError("trl_args must be a mapping of TRL config fields to values")
        positive = (
            "lora_r",
            "lora_alpha",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "logging_steps",
            "save_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples", "eval_steps", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 or unset, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_train_epochs) or positive, got {self.max_steps}")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty: use 'all-linear' or module names")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.trl_args:
            owned = {f.name for f in dataclasses.fields(self)} | MANAGED_TRL_FIELDS
            check_trl_args(self.trl_args, self.trl_config_class(), owned)

    @classmethod
    def trl_config_class(cls) -> type:
        """The TRL config class this stage fills (``SFTConfig``, ``DPOConfig``)."""
        from transformers import TrainingArguments

        return TrainingArguments

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hashed_items(self) -> dict[str, Any]:
        """The settings that determine the trained weights (what the config hash covers)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}


# TRL config fields the stages set themselves (besides those named like a stage config field).
MANAGED_TRL_FIELDS = frozenset(
    {
        "output_dir",
        "run_name",
        "bf16",
        "fp16",
        "activation_checkpointing",
        "gradient_checkpointing",
        "dataloader_pin_memory",
        "logging_first_step",
        "save_strategy",
        "eval_strategy",
        "eval_on_start",
        "disable_tqdm",
        "use_cpu",
        "loss_type",
        "label_smoothing",
        "precompute_ref_log_probs",
    }
)


def check_trl_args(trl_args: dict[str, Any] | None, config_cls: type, ours: Any) -> dict[str, Any]:
    """Validate ``trl_args`` keys against a TRL config class; settings the stage owns must be set directly.

    Raises ``ValueError`` (which the config parser reports with the file name) for a bad key.
    """
    if not trl_args:
        return {}
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    for key in trl_args:
        if key not in known:
            raise ValueError(f"trl_args key {key!r} is not a field of TRL's {config_cls.__name__}")
        if key in ours:
            raise ValueError(f"trl_args key {key!r} is a stage setting: set {key!r} directly instead")
    return dict(trl_args)


# --------------------------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """How a stage runs on this hardware: device, mixed-precision flags and the dtype weights load in."""

    device: str
    name: Literal["fp32", "bf16", "fp16"]
    load_dtype: str  # "float32" | "bfloat16" | "float16"
    quantize_4bit: bool = False

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def fp16(self) -> bool:
        return self.name == "fp16"


def choose_precision(requested: str = "auto", adapter: str = "full", device: str | None = None) -> Precision:
    """Pick the precision from the hardware: fp32 on CPU and MPS, bf16 on GPUs that support it, else fp16.

    Full fine-tuning keeps fp32 master weights under bf16/fp16 autocast; LoRA and QLoRA load the frozen
    base in the half type. QLoRA needs CUDA.

    >>> choose_precision("auto", "full", device="cpu")
    Precision(device='cpu', name='fp32', load_dtype='float32', quantize_4bit=False)
    >>> choose_precision("auto", "qlora", device="cpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    alignment.errors.SafealignError: adapter 'qlora' needs a CUDA GPU ...
    """
    import torch

    from alignment.device import pick_device

    dev = pick_device(device).type
    if adapter == "qlora" and dev != "cuda":
        raise SafealignError(
            f"adapter 'qlora' needs a CUDA GPU (4-bit bitsandbytes weights), and this machine trains "
            f"on {dev}: use adapter 'lora' or 'full'"
        )
    bf16_ok = dev == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "auto":
        name = ("bf16" if bf16_ok else "fp16") if dev == "cuda" else "fp32"
    else:
        name = requested
    if name == "bf16" and dev == "cuda" and not bf16_ok:
        raise SafealignError("precision 'bf16' is not supported by this GPU: use 'fp16' or 'auto'")
    if name == "fp16" and dev != "cuda":
        raise SafealignError(f"precision 'fp16' needs a CUDA GPU (this machine trains on {dev}): use 'fp32'")
    half = {"bf16": "bfloat16", "fp16": "float16"}.get(name)
    load_dtype = half if (adapter != "full" and half) else "float32"
    return Precision(device=dev, name=name, load_dtype=load_dtype, quantize_4bit=adapter == "qlora")


def quantization_config(precision: Precision) -> Any:
    """The 4-bit NF4 config for QLoRA, or None; a clear error when bitsandbytes is missing."""
    if not precision.quantize_4bit:
        return None
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise SafealignError("adapter 'qlora' needs bitsandbytes: pip install 'safealign[gpu]'")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, precision.load_dtype),
    )


def lora_config(cfg: StageConfig) -> Any:
    """The PEFT LoRA config for ``cfg`` (None for full fine-tuning)."""
    if cfg.adapter == "full":
        return None
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


# ----------------------------------------------------------------------------------------------- models


def resolve_input_model(spec: str) -> ModelSource:
    """Resolve a model spec; a previous stage's run directory stands for its ``model/`` folder."""
    path = Path(str(spec)).expanduser()
    if (path / STAGE_FILE).is_file() and not (path / "config.json").exists():
        if not (path / MODEL_DIR).is_dir():
            raise SafealignError(
                f"{path} is a stage run directory without a finished model ({path / MODEL_DIR} is missing): "
                "finish that stage first (`safealign train ... --resume`)"
            )
        spec = str(path / MODEL_DIR)
    return resolve_model(spec)


def base_pointer(source: ModelSource) -> str:
    """What an adapter trained on ``source`` records as its base: alias, hub id or absolute path."""
    if source.kind == "adapter":
        return base_pointer(source.base)
    if source.kind == "local":
        return str(Path(source.path).resolve())
    return source.spec if source.kind == "alias" else source.path


def load_causal_lm(
    source: ModelSource,
    precision: Precision,
    *,
    trainable_adapter: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """Load the model a stage trains (or uses as reference) from disk, never from memory.

    An adapter directory is loaded on top of its base: merged into it (full fine-tuning, reference
    models), or kept as a trainable adapter (``trainable_adapter``, LoRA stages continuing a LoRA stage).
    """
    import torch
    from transformers import AutoModelForCausalLM

    base = source.base if source.kind == "adapter" else source
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, precision.load_dtype),
        "trust_remote_code": trust_remote_code,
    }
    quant = quantization_config(precision)
    if quant is not None:
        from accelerate import PartialState

        kwargs.update(quantization_config=quant, device_map={"": PartialState().local_process_index})
    model = from_pretrained(AutoModelForCausalLM, base, **kwargs)
    if source.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path, is_trainable=trainable_adapter)
        for adapter_config in model.peft_config.values():  # the adapter may name its base by alias
            adapter_config.base_model_name_or_path = base.path
        if not trainable_adapter:
            model = model.merge_and_unload()
    return model


def load_stage_model(cfg: StageConfig, source: ModelSource, precision: Precision) -> tuple[Any, Any, Any]:
    """Model, tokenizer and PEFT config (None when the model already carries the adapter to train)."""
    continue_adapter = source.kind == "adapter" and cfg.adapter != "full"
    model = load_causal_lm(
        source, precision, trainable_adapter=continue_adapter, trust_remote_code=cfg.trust_remote_code
    )
    tokenizer = load_tokenizer(source, trust_remote_code=cfg.trust_remote_code)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None if continue_adapter else lora_config(cfg)
    return model, tokenizer, peft_config


def model_slug(spec: str) -> str:
    """A short, path-safe name for a model spec, used in default run directory names.

    >>> model_slug("HuggingFaceTB/SmolLM2-135M-Instruct")
    'SmolLM2-135M-Instruct'
    >>> model_slug("runs/sft-tiny-random/")
    'sft-tiny-random'
    """
    name = Path(str(spec).rstrip("/")).name
    if name == MODEL_DIR:
        name = Path(str(spec).rstrip("/")).parent.name
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name) or "model"
