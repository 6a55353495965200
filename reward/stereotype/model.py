"""The stereotype classifier: a Hugging Face encoder, mean pooling and a linear head over three labels.

A saved classifier is a folder: the encoder and tokenizer in Hugging Face format (loadable with
``AutoModel.from_pretrained``), ``head.safetensors``, ``classifier.json`` (labels, pooling, max
length, backbone), plus what training wrote next to them (``metrics.json``, ``manifest.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.errors import SafealignError
from alignment.paths import cache_dir
from reward.stereotype.data import LABELS
from reward.toxicity.base import DEFAULT_MAX_CHARS, as_texts, batches

FORMAT = "safealign-stereotype-classifier"
FORMAT_VERSION = 1
CONFIG_FILE = "classifier.json"
HEAD_FILE = "head.safetensors"


def default_model_dir() -> Path:
    """Where ``safealign reward train-stereotype`` saves by default, and the ``stereotype`` reward looks."""
    return cache_dir() / "stereotype-classifier"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``mask`` is 1 (the sentence-transformers pooling).

    >>> mean_pool(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[1, 1, 0]])).tolist()
    [[2.0]]
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class StereotypeClassifier(nn.Module):
    """Encoder + mean pooling + dropout + linear head; ``predict_proba`` gives P(stereotype)."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, meta: dict[str, Any], dropout: float = 0.1):
        super().__init__()
        self.encoder, self.tokenizer, self.meta = encoder, tokenizer, dict(meta)
        self.labels: tuple[str, ...] = tuple(meta.get("labels", LABELS))
        self.max_length = int(meta.get("max_length", 128))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(self.labels))

    @classmethod
    def from_backbone(
        cls, backbone: str, max_length: int = 128, dropout: float = 0.1
    ) -> StereotypeClassifier:
        """A fresh classifier on an encoder: ``minilm-l6`` (packaged), a local folder or a hub id."""
        from transformers import AutoModel, AutoTokenizer

        from alignment.models import PACKAGED, packaged_path

        location = str(packaged_path(backbone)) if backbone in PACKAGED else backbone
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            encoder = AutoModel.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise SafealignError(
                f"backbone {backbone!r}: cannot load an encoder ({str(exc).splitlines()[0]})"
            ) from exc
        meta = {"labels": list(LABELS), "pooling": "mean", "max_length": max_length, "backbone": backbone}
        return cls(encoder, tokenizer, meta, dropout)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        device = self.head.weight.device
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in batch.items()}

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean-pooled sentence vectors ``(batch, hidden)``."""
        hidden = self.encoder(**inputs).last_hidden_state
        return mean_pool(hidden, inputs["attention_mask"])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(batch, len(labels))``."""
        return self.head(self.dropout(self.embed(inputs)))

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Pooled vectors of many texts, batched by similar length (less padding), in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        pooled = torch.empty(len(texts), self.head.in_features, device=self.head.weight.device)
        for index in batches(order, batch_size):
            pooled[list(index)] = self.embed(self.tokenize([texts[i] for i in index])).float()
        return pooled

    @torch.inference_mode()
    def predict(self, texts: list[Any], batch_size: int = 32) -> list[dict[str, float]]:
        """Probability of every label per text (``None``/empty texts are scored as empty strings)."""
        clean = as_texts(texts, DEFAULT_MAX_CHARS)
        if not clean:
            return []
        was_training = self.training
        self.eval()
        probs = torch.softmax(self.head(self.embed_texts(clean, batch_size)), dim=-1).cpu().tolist()
        self.train(was_training)
        return [dict(zip(self.labels, p, strict=True)) for p in probs]

    def predict_proba(self, texts: list[Any], batch_size: int = 32) -> list[float]:
        """P(stereotype) per text, batched."""
        return [row["stereotype"] for row in self.predict(texts, batch_size)]

    def summary(self) -> dict[str, Any]:
        """Backbone, mode and held-out headline metrics, for reward ``info`` and reports."""
        keys = ("backbone", "mode", "heldout_macro_f1", "trained_at")
        return {k: self.meta[k] for k in keys if k in self.meta}

    def save(self, folder: Path) -> None:
        """Write the encoder and tokenizer (HF format), the head and ``classifier.json`` into ``folder``."""
        from safetensors.torch import save_file

        from alignment.io import atomic_write_json

        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
            str(folder / HEAD_FILE),
        )
        atomic_write_json(folder / CONFIG_FILE, {"format": FORMAT, "version": FORMAT_VERSION, **self.meta})

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> StereotypeClassifier:
        """Load a saved classifier, with a clear error when the folder is missing or not one of ours."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise SafealignError(
                f"no stereotype classifier at {path}: train one with "
                f"`safealign reward train-stereotype --out {path}` or pass the folder of one"
            )
        config_file = path / CONFIG_FILE
        try:
            meta = json.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SafealignError(f"{path}: no {CONFIG_FILE}; not a safealign stereotype classifier") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SafealignError(f"{config_file}: not valid JSON ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise SafealignError(
                f"{config_file}: format {meta.get('format')!r} version {meta.get('version')!r} is not "
                f"{FORMAT!r} version {FORMAT_VERSION}; retrain with this safealign version"
            )
        meta.pop("format"), meta.pop("version")
        try:
            encoder = AutoModel.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            head = load_file(str(path / HEAD_FILE))
        except (OSError, ValueError) as exc:
            raise SafealignError(
                f"{path}: incomplete or incompatible classifier ({str(exc).splitlines()[0]})"
            ) from exc
        model = cls(encoder, tokenizer, meta)
        try:
            model.head.load_state_dict(head)
        except RuntimeError as exc:
            raise SafealignError(f"{path / HEAD_FILE}: head does not fit the encoder ({exc})") from exc
        return model.to(torch.device(device or "cpu")).eval()
