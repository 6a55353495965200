"""The scorer interface every toxicity backend implements, and text clean-up shared by all of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from alignment.errors import SafealignError

DEFAULT_MAX_CHARS = 10_000


def as_text(value: Any, index: int | None = None, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Turn one input into the string a scorer sees.

    ``None`` becomes ``""``; chat messages (a dict with ``content`` or a list of them, as TRL passes
    conversational completions) become their joined contents; text longer than ``max_chars``
    characters is cut, so a runaway generation cannot stall a scorer.

    >>> as_text(None)
    ''
    >>> as_text([{"role": "assistant", "content": "Hi there"}])
    'Hi there'
    >>> as_text("abcdef", max_chars=3)
    'abc'
    """
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, dict) and "content" in value:
        text = as_text(value["content"], index, max_chars)
    elif isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        text = "\n".join(as_text(m.get("content"), index, max_chars) for m in value)
    else:
        at = f" at position {index}" if index is not None else ""
        raise SafealignError(
            f"cannot score a {type(value).__name__}{at}: expected text, None or chat messages"
        )
    return text[:max_chars] if max_chars and len(text) > max_chars else text


def as_texts(values: Iterable[Any], max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """:func:`as_text` over a batch (a bare string counts as a batch of one)."""
    if isinstance(values, str):
        values = [values]
    return [as_text(v, i, max_chars) for i, v in enumerate(values)]


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` elements.

    >>> [list(b) for b in batches([1, 2, 3, 4, 5], 2)]
    [[1, 2], [3, 4], [5]]
    """
    if size < 1:
        raise SafealignError(f"batch_size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ToxicityScorer(ABC):
    """Scores texts for toxicity in [0, 1], batched; one backend per subclass.

    ``name`` is the backend that actually produced the scores (``auto`` resolves to one), ``labels``
    the per-label outputs of the backend, ``primary`` the label that :meth:`score` returns and
    ``info`` a JSON-friendly description of where the model came from (for manifests and reports).
    """

    name: str = "base"
    labels: tuple[str, ...] = ()
    primary: str = ""
    max_chars: int = DEFAULT_MAX_CHARS
    default_batch_size: int = 32

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"backend": self.name}

    @abstractmethod
    def _predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities of shape ``(len(texts), len(self.labels))`` for one batch of clean texts."""

    def predict_array(self, texts: Iterable[Any], batch_size: int | None = None) -> np.ndarray:
        """All labels for all texts as one array ``(n, len(labels))``."""
        clean = as_texts(texts, self.max_chars)
        if not clean:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        parts = [self._predict(list(b)) for b in batches(clean, batch_size or self.default_batch_size)]
        return np.concatenate(parts, axis=0).astype(np.float64)

    def score_labels(self, texts: Iterable[Any], batch_size: int | None = None) -> list[dict[str, float]]:
        """One ``{label: probability}`` dict per text."""
        array = self.predict_array(texts, batch_size)
        return [dict(zip(self.labels, map(float, row), strict=True)) for row in array]

    def score(self, texts: Iterable[Any], batch_size: int | None = None) -> list[float]:
        """Toxicity (the ``primary`` label) per text, in [0, 1]."""
        array = self.predict_array(texts, batch_size)
        return [float(v) for v in array[:, self.labels.index(self.primary)]]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} primary={self.primary!r}>"


def pick_label(labels: Sequence[str], wanted: str | None, backend: str) -> str:
    """The label ``score()`` returns: ``wanted`` if given (it must exist), else the backend's first label."""
    if wanted is None:
        return labels[0]
    if wanted not in labels:
        raise SafealignError(
            f"{backend}: unknown label {wanted!r}; this model has labels {', '.join(labels)}"
        )
    return wanted
