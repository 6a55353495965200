"""PPO checkpoints (``checkpoints/checkpoint-N``) and the final model of a PPO run.

A checkpoint holds what PPO trains (all weights, or the LoRA adapter and the value head), the optimiser
and scheduler states, and ``trainer_state.json`` (step, KL coefficient, logged history), written last
so that its presence marks a complete checkpoint, as for the TRL stages.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from alignment.errors import SafealignError
from alignment.io import atomic_dir, atomic_write_bytes, atomic_write_json
from alignment.rl.value_head import PolicyWithValue
from alignment.stages.common import base_pointer
from alignment.stages.rundir import StageDir, checkpoints
from alignment.stages.runner import merge_adapter, point_adapter_at

TRAINER_STATE = "trainer_state.json"
VALUE_HEAD_FILE = "value_head.safetensors"


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
    complete = [path for _, path, ok in checkpoints(sd.checkpoints) if ok]
    if limit is not None:
        for old in complete[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _load_tensors(file: Path) -> Any:
    """Tensors and plain containers only (``weights_only``): a file holding other Python objects is refused,
    never unpickled."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SafealignError(
            f"{file}: refused to load: it holds Python objects, not only tensors (a checkpoint safealign "
            "wrote never does); --force starts over"
        ) from exc


def load_checkpoint(path: Path, policy: PolicyWithValue, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore the trained parameters, optimiser and scheduler; returns the trainer state."""
    weights = _load_tensors(path / "trainable.pt")
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
    optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    scheduler.load_state_dict(_load_tensors(path / "scheduler.pt"))
    return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))


def params_finite(policy: PolicyWithValue) -> bool:
    """True when every trained parameter is finite (a state worth keeping)."""
    return all(torch.isfinite(p).all() for p in policy.parameters() if p.requires_grad)


def save_final(
    sd: StageDir,
    policy: PolicyWithValue,
    tokenizer: Any,
    source: Any,
    *,
    merge: bool,
    trust_remote_code: bool,
) -> dict[str, Any]:
    """Write ``model/`` (full weights, or the adapter pointing at its base, or merged) and the value head."""
    from peft import PeftModel
    from safetensors.torch import save as safetensors_bytes

    record: dict[str, Any]
    with atomic_dir(sd.model) as tmp:
        if isinstance(policy.policy, PeftModel):
            pointer = base_pointer(source)
            adapter_dir = tmp / "adapter" if merge else tmp
            policy.policy.save_pretrained(adapter_dir, selected_adapters=["default"])
            point_adapter_at(adapter_dir, pointer)
            record = {"saved_as": "adapter", "base": pointer}
            if merge:
                merge_adapter(adapter_dir, pointer, tmp, trust_remote_code)
                shutil.rmtree(adapter_dir)
                record = {"saved_as": "merged", "base": pointer}
        else:
            policy.policy.save_pretrained(tmp, safe_serialization=True)
            record = {"saved_as": "full"}
        tokenizer.save_pretrained(tmp)
    head = {k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()}
    atomic_write_bytes(sd.root / VALUE_HEAD_FILE, safetensors_bytes(head))
    record["path"] = str(sd.model)
    record["value_head"] = str(sd.root / VALUE_HEAD_FILE)
    return record
