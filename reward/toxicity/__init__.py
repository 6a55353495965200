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
import inspect
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


def _build(cls: type[ToxicityScorer], spec: str, *args: Any, **options: Any) -> ToxicityScorer:
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("device", "label")]
    unknown = sorted(set(options) - {"device", "label"} - set(accepted[len(args) :]))
    if unknown:
        raise SafealignError(
            f"toxicity scorer {spec!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(['label', *accepted[len(args) :]])}"
        )
    return cls(*args, **options)


def _load(spec: str, device: str | None, options: dict[str, Any]) -> ToxicityScorer:
    backend, _, arg = spec.partition(":")
    options = dict(options, device=device)
    if backend == "auto" and not arg:
        label = options.pop("label", None)
        unknown = sorted(set(options) - {"device", "hf_config"})
        if unknown:
            raise SafealignError(
                f"toxicity scorer 'auto' takes only label and hf_config, not {', '.join(unknown)}"
            )
        return _auto(options.pop("device"), label, **options)
    if backend == "jigsaw-bilstm":
        return _build(JigsawBiLSTMScorer, spec, arg or options.pop("model_dir", None), **options)
    if backend == "detoxify":
        return _build(DetoxifyScorer, spec, arg or "original", **options)
    if backend == "hf":
        if not arg:
            raise SafealignError("scorer 'hf:' needs a model: hf:<hub id or local folder>")
        return _build(HFClassifierScorer, spec, arg, **options)
    if backend == "profanity" and not arg:
        return _build(ProfanityScorer, spec, **options)
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
