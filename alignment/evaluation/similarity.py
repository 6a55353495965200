"""Meaning preservation: sentence embeddings from the packaged all-MiniLM-L6-v2 encoder, and chrF overlap.

The encoder is used as sentence-transformers uses it (mean pooling over tokens, L2-normalised vectors),
so the dot product of two vectors is their cosine similarity. chrF comes from sacrebleu.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alignment.errors import SafealignError

ENCODER = "minilm-l6"


class SentenceEncoder:
    """L2-normalised, mean-pooled sentence vectors of a Hugging Face encoder (default: packaged MiniLM)."""

    def __init__(self, name: str = ENCODER, device: str | None = None, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        from alignment.models import PACKAGED, packaged_path

        location = str(packaged_path(name)) if name in PACKAGED else name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModel.from_pretrained(location).eval()
        except (OSError, ValueError) as exc:
            raise SafealignError(
                f"sentence encoder {name!r}: cannot load ({str(exc).splitlines()[0]})"
            ) from exc
        if device:
            self.model.to(device)
        self.name = name
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``[len(texts), dim]`` unit vectors, in input order (batched by length)."""
        from reward.stereotype.model import mean_pool

        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            pooled = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            vectors[index] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return vectors

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "pooling": "mean", "normalised": True, "max_length": self.max_length}


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[n, dim]`` arrays of unit vectors."""
    return np.einsum("ij,ij->i", a, b)


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence-level chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)
