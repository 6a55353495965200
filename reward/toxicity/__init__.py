"""Toxicity scorers behind one interface: ``load_scorer(spec).score(texts) -> list[float]`` in [0, 1].

Specs:

- ``auto``: detoxify (original) when its checkpoint is already on disk, else ``jigsaw-bilstm``;
  ``scorer.name`` and ``scorer.info`` say which backend was used and why;
- ``jigsaw-bilstm`` (or ``jigsaw-bilstm:/path/to/model_dir``): the packaged offline BiLSTM;
- ``detoxify:original|unbiased|multilingual|original-small|unbiased-small`` or ``detoxify:/path/x.ckpt``;
- ``hf:<hub id or folder>``: any text-classification model (``label=`` picks the toxic label);
- ``profanity``: alt-profanity-check.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from reward.toxicity.backends import (
    DETOXIFY_VARIANTS,
    DetoxifyScorer,
    HFClassifierScorer,
    ProfanityScorer,
    detoxify_available,
    detoxify_checkpoint_file,
)
from reward.toxicity.base import ToxicityScorer, as_text, as_texts
from reward.toxicity.jigsaw_bilstm import JigsawBiLSTMScorer

BACKENDS = ("auto", "jigsaw-bilstm", "detoxify", "hf", "profanity")

__all__ = [
    "BACKENDS",
    "DETOXIFY_VARIANTS",
    "DetoxifyScorer",
    "HFClassifierScorer",
    "JigsawBiLSTMScorer",
    "ProfanityScorer",
    "ToxicityScorer",
    "as_text",
    "as_texts",
    "load_scorer",
]


def _auto(device: str | None, label: str | None, **options: Any) -> ToxicityScorer:
    if detoxify_available("original"):
        try:
            scorer = DetoxifyScorer("original", device=device, label=label, **options)
        except SafealignError as exc:
            reason = f"detoxify:original failed to load ({exc}); fell back to jigsaw-bilstm"
        else:
            scorer.info["requested"] = "auto"
            return scorer
    else:
        try:
            missing = detoxify_checkpoint_file("original")
            reason = f"detoxify weights not found at {missing}; used jigsaw-bilstm"
        except ImportError:
            reason = "detoxify is not installed; used jigsaw-bilstm"
    scorer = JigsawBiLSTMScorer(device=device, label=label)
    scorer.info.update(requested="auto", reason=reason)
    return scorer


@functools.lru_cache(maxsize=8)
def _load_cached(spec: str, device: str | None, options: tuple[tuple[str, Any], ...]) -> ToxicityScorer:
    return _load(spec, device, dict(options))


def _load(spec: str, device: str | None, options: dict[str, Any]) -> ToxicityScorer:
    backend, _, arg = spec.partition(":")
    label = options.pop("label", None)
    if backend == "auto" and not arg:
        return _auto(device, label, **options)
    if backend == "jigsaw-bilstm":
        return JigsawBiLSTMScorer(
            arg or options.pop("model_dir", None), device=device, label=label, **options
        )
    if backend == "detoxify":
        return DetoxifyScorer(arg or "original", device=device, label=label, **options)
    if backend == "hf":
        if not arg:
            raise SafealignError("scorer 'hf:' needs a model: hf:<hub id or local folder>")
        return HFClassifierScorer(arg, device=device, label=label, **options)
    if backend == "profanity" and not arg:
        return ProfanityScorer(device=device, label=label, **options)
    raise SafealignError(
        f"unknown toxicity scorer {spec!r}; use one of: auto, jigsaw-bilstm, detoxify:<variant or .ckpt>, "
        "hf:<model>, profanity"
    )


def load_scorer(
    spec: str = "auto", device: str | None = None, cache: bool = True, **options: Any
) -> ToxicityScorer:
    """Load a toxicity scorer by spec (see the module docstring); ``options`` go to the backend.

    Backend options: ``label`` (which label ``score()`` returns), ``hf_config`` (detoxify, offline),
    ``max_length`` (hf), ``model_dir`` (jigsaw-bilstm). Loaded scorers are shared between callers
    with the same arguments unless ``cache=False``.

    >>> scorer = load_scorer("jigsaw-bilstm")
    >>> scorer.name, scorer.primary
    ('jigsaw-bilstm', 'toxicity')
    >>> [round(s, 2) for s in scorer.score(["You are a stupid idiot.", "Thanks, have a lovely day!"])]
    [1.0, 0.02]
    """
    spec = str(spec).strip()
    key = tuple(sorted((k, str(v) if isinstance(v, Path) else v) for k, v in options.items()))
    if cache:
        try:
            return _load_cached(spec, device, key)
        except TypeError:  # an unhashable option: load without sharing
            pass
    return _load(spec, device, dict(options))
