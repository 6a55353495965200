"""Model loading: built-in aliases, local checkpoints, PEFT adapters and hub ids, offline-friendly."""

from alignment.models.loader import ALIASES, Alias, ModelSource, load_model, load_tokenizer, resolve_model
from alignment.models.packaged import PACKAGED, PackagedAsset, packaged_path

__all__ = [
    "ALIASES",
    "Alias",
    "ModelSource",
    "PACKAGED",
    "PackagedAsset",
    "load_model",
    "load_tokenizer",
    "packaged_path",
    "resolve_model",
]
