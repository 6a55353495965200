"""Built-in reward functions with TRL's signature ``fn(prompts, completions, **kwargs) -> list[float]``.

Plain functions need no setup; the classes load a model once (lazily after unpickling) and are then
called like functions. Every one accepts and ignores extra keyword arguments (TRL passes dataset
columns, ``completion_ids``, ``trainer_state``, ``log_metric``), and accepts completions as strings,
``None`` or chat messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reward.toxicity.base import DEFAULT_MAX_CHARS, as_text, as_texts


def _texts(prompts: Sequence[Any] | None, completions: Sequence[Any], include_prompt: bool) -> list[str]:
    texts = as_texts(completions, DEFAULT_MAX_CHARS)
    if include_prompt and prompts is not None:
        texts = [f"{as_text(p, i)} {t}".strip() for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]
    return texts


def length_penalty(prompts, completions, max_words: int = 200, **kwargs) -> list[float]:
    """0 for completions of at most ``max_words`` words, then minus the excess as a fraction of it.

    >>> length_penalty(["q", "q", "q"], ["a b c", "a b c d e f", None], max_words=4)
    [0.0, -0.5, 0.0]
    """
    return [-max(0, len(as_text(c, i).split()) - max_words) / max_words for i, c in enumerate(completions)]


def non_empty(prompts, completions, **kwargs) -> list[float]:
    """1 for a completion with any visible text, 0 for an empty or whitespace-only one.

    >>> non_empty(["q", "q", "q"], ["Sure.", "  ", None])
    [1.0, 0.0, 0.0]
    """
    return [1.0 if as_text(c, i).strip() else 0.0 for i, c in enumerate(completions)]


class ToxicityReward:
    """Toxicity in [0, 1] of each completion (``invert=True``: 1 - toxicity, higher is better).

    ``scorer`` is a spec for :func:`reward.toxicity.load_scorer` (``auto``, ``jigsaw-bilstm``, ...);
    ``include_prompt`` scores prompt and completion together. ``info`` records the backend used.
    """

    def __init__(
        self,
        scorer: str = "auto",
        invert: bool = False,
        include_prompt: bool = False,
        batch_size: int = 32,
        device: str | None = None,
        label: str | None = None,
    ) -> None:
        self.spec = dict(scorer=scorer, device=device, label=label)
        self.invert, self.include_prompt, self.batch_size = invert, include_prompt, batch_size
        self.__name__ = "non_toxic" if invert else "toxicity"
        self._scorer = self._load()
        self.info = dict(self._scorer.info)

    def _load(self):
        from reward.toxicity import load_scorer

        return load_scorer(self.spec["scorer"], device=self.spec["device"], label=self.spec["label"])

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_scorer"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scorer = self._load()

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        scores = self._scorer.score(_texts(prompts, completions, self.include_prompt), self.batch_size)
        return [1.0 - s for s in scores] if self.invert else scores


class StereotypeReward:
    """P(stereotyped) of each completion from a trained stereotype classifier (``invert``: 1 - P).

    ``model`` is a directory written by ``safealign reward train-stereotype``; by default the one in
    the cache (``SAFEALIGN_CACHE/stereotype-classifier``).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        invert: bool = False,
        include_prompt: bool = False,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        from reward.stereotype import default_model_dir

        self.model_dir = str(model or default_model_dir())
        self.invert, self.include_prompt, self.batch_size, self.device = (
            invert,
            include_prompt,
            batch_size,
            device,
        )
        self.__name__ = "anti_stereotype" if invert else "stereotype"
        self._classifier = self._load()
        self.info = {
            "backend": "stereotype-classifier",
            "model": self.model_dir,
            **self._classifier.summary(),
        }

    def _load(self):
        from reward.stereotype import StereotypeClassifier

        return StereotypeClassifier.load(self.model_dir, device=self.device)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_classifier"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._classifier = self._load()

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = _texts(prompts, completions, self.include_prompt)
        probs = self._classifier.predict_proba(texts, batch_size=self.batch_size)
        return [1.0 - p for p in probs] if self.invert else probs
