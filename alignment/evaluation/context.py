"""What a suite gets to work with: the model, the engine, data access, splitting, sampling, statistics and
the shared scorers (loaded once per evaluation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from alignment.errors import SafealignError
from alignment.evaluation.engine import LoglikEngine
from alignment.evaluation.registry import SuiteSpec
from alignment.evaluation.stats import DEFAULT_RESAMPLES, Estimate, mean_ci, statistic_ci
from alignment.evaluation.subsample import subsample
from alignment.generation import format_prompt, sample

T = TypeVar("T")
SPLIT_MODES = ("heldout", "validation", "all")


class NonFiniteScores(SafealignError):
    """A model scored an item NaN or inf: a metric built on it would be meaningless."""


@dataclass
class Services:
    """Scorers and the base model, loaded on first use and shared by every suite of one evaluation."""

    device: str | None = None
    dtype: str | None = None
    base_spec: str | None = None
    toxicity_spec: str = "auto"
    stereotype_path: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def toxicity(self) -> Any:
        """The toxicity scorer (``reward.toxicity.load_scorer``)."""
        if "toxicity" not in self._cache:
            from reward.toxicity import load_scorer

            self._cache["toxicity"] = load_scorer(self.toxicity_spec, device=self.device)
        return self._cache["toxicity"]

    def stereotype_classifier(self) -> Any:
        """The learned stereotype classifier (``reward.stereotype``)."""
        if "stereotype" not in self._cache:
            self._cache["stereotype"] = load_stereotype_classifier(self.stereotype_path, self.device)
        return self._cache["stereotype"]

    def sentence_encoder(self) -> Any:
        """The packaged MiniLM sentence encoder (:mod:`alignment.evaluation.similarity`)."""
        if "encoder" not in self._cache:
            from alignment.evaluation.similarity import SentenceEncoder

            self._cache["encoder"] = SentenceEncoder(device=self.device)
        return self._cache["encoder"]

    def base_model(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of the base model for ``kl_to_base``."""
        if not self.base_spec:
            raise SafealignError("this suite compares with a base model: pass --base-model SPEC")
        if "base" not in self._cache:
            from alignment.models import load_model

            self._cache["base"] = load_model(self.base_spec, device=self.device, dtype=self.dtype)
        return self._cache["base"]

    def share_base(self, model: Any, tokenizer: Any) -> None:
        """Use an already loaded model as the base (the evaluated model is its own base: no second copy)."""
        self._cache["base"] = (model, tokenizer)


def load_stereotype_classifier(path: str | None, device: str | None = None) -> Any:
    """Load the stereotype classifier from ``path`` (default: the reward module's default folder)."""
    from reward.stereotype import StereotypeClassifier, default_model_dir

    return StereotypeClassifier.load(path or default_model_dir(), device=device)


def stereotype_classifier_path(path: str | None) -> Path:
    """Where the classifier is expected (for checks before the model loads)."""
    from reward.stereotype import default_model_dir

    return Path(path) if path else default_model_dir()


@dataclass
class SuiteContext:
    """Everything one suite run needs; suites record what they used into ``data_files`` and ``backends``."""

    spec: SuiteSpec
    model: Any
    tokenizer: Any
    engine: LoglikEngine
    services: Services
    seed: int = 0
    limit: int | None = None
    split_mode: str = "heldout"
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    split_seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    options: dict[str, Any] = field(default_factory=dict)
    generation_batch_size: int = 96
    progress: Callable[[str, int], Callable[[int], None]] | None = None
    data_files: dict[str, str] = field(default_factory=dict)
    backends: dict[str, Any] = field(default_factory=dict)
    split_used: str = "all"
    n_available: int | None = None
    baseline: Any = None  # an alignment.evaluation.baselines.Baseline, or None for the model as it is

    # -- data ---------------------------------------------------------------------------------------

    def data_file(self, relative: str) -> Path:
        """Resolve a data file (``SAFEALIGN_DATA_DIR`` or a checked download) and record its sha256."""
        from alignment.io import sha256_file
        from data_builders.sources import resolve_data_file

        path = Path(resolve_data_file(relative))
        if relative not in self.data_files:
            self.data_files[relative] = sha256_file(path)
        return path

    def select(
        self,
        items: Sequence[T],
        *,
        key: Callable[[T], str],
        strata: Callable[[T], str] | None = None,
        split_key: Callable[[T], str] | None = None,
        training: bool | None = None,
    ) -> list[T]:
        """This mode's part of the items, then a deterministic, stratified subsample of at most ``limit``.

        ``heldout``: the test groups of data that builders train on, and every item but the validation
        ones elsewhere. ``validation``: the validation groups of every suite (for choosing recipes;
        never the test items). ``all``: everything. ``training`` says whether these items come from data
        that builders train on (default: the suite's ``training_source``), for suites that read both kinds.
        """
        items = list(items)
        self.split_used = "all"
        if self.split_mode != "all":
            from data_builders.splits import assign_split

            group = split_key or key

            def side(item: T) -> str:
                return assign_split(group(item), self.test_fraction, self.split_seed, self.val_fraction)

            if self.split_mode == "validation":
                items, self.split_used = [it for it in items if side(it) == "validation"], "validation"
            elif self.spec.training_source if training is None else training:
                items, self.split_used = [it for it in items if side(it) == "test"], "test"
            elif self.val_fraction > 0:
                items, self.split_used = (
                    [it for it in items if side(it) != "validation"],
                    "all-but-validation",
                )
        self.n_available = len(items)
        if not items:
            raise SafealignError(f"suite {self.spec.name}: no items left after the {self.split_used!r} split")
        return subsample(items, self.limit, key=key, strata=strata, seed=self.seed)

    # -- models -------------------------------------------------------------------------------------

    def tracker(self, description: str, total: int) -> Callable[[int], None] | None:
        return self.progress(f"{self.spec.name}: {description}", total) if self.progress else None

    def loglikelihood(
        self,
        requests: Sequence[tuple[str, str]],
        description: str = "scoring",
        topics: Sequence[str] | None = None,
    ) -> list:
        """Score ``(context, continuation)`` requests with the engine, with a progress bar; a score that is
        not finite raises :class:`NonFiniteScores` naming the suite and the item. ``topics``: each
        request's topic (see :meth:`LoglikEngine.about`), scored topic by topic."""
        self.engine.progress = self.tracker(description, len(set(requests)))
        try:
            if topics is None:
                scored = self.engine.loglikelihood(requests)
            else:
                scored = [None] * len(requests)
                for topic in dict.fromkeys(topics):
                    picked = [i for i, t in enumerate(topics) if t == topic]
                    with self.engine.about(topic):
                        group = self.engine.loglikelihood([requests[i] for i in picked])
                    for i, s in zip(picked, group, strict=True):
                        scored[i] = s
        finally:
            self.engine.progress = None
        bad = next((i for i, s in enumerate(scored) if not math.isfinite(s.logprob)), None)
        if bad is not None:
            text = " ".join("".join(requests[bad]).split())
            raise NonFiniteScores(
                f"suite {self.spec.name}, item {text[:60]!r}: the log-likelihood is {scored[bad].logprob} "
                "(not finite); the model's outputs overflow or its weights are broken"
            )
        return scored

    def sampling(self) -> dict[str, Any]:
        """The suite's ``num_samples``, ``max_new_tokens``, ``temperature`` and ``top_p`` options."""
        return {key: self.options[key] for key in ("num_samples", "max_new_tokens", "temperature", "top_p")}

    def generate(
        self,
        prompts: list[str],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 20,
        temperature: float = 1.0,
        top_p: float = 0.9,
        chat: bool = False,
        system: str | None = None,
        description: str = "generating",
    ) -> list[list[str]]:
        """Seeded continuations (see :func:`alignment.generation.sample`) of raw-text prompts, or with
        ``chat`` of user messages (after an optional ``system`` message) rendered with the model's chat
        template; a tokenizer without one gets the system and user texts joined by a blank line."""
        templated = chat and bool(getattr(self.tokenizer, "chat_template", None))
        if self.baseline is not None:
            prompts, system = self.baseline.frame(prompts, system, templated)
        if templated:
            prompts = [format_prompt(self.tokenizer, p, system, chat=True) for p in prompts]
        elif chat and system:
            prompts = [f"{system}\n\n{p}" for p in prompts]
        self.backends["generation"] = {
            "num_samples": num_samples,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p if temperature > 0 else None,
            "seed": self.seed,
            "batch_size": self.generation_batch_size,
            "chat_template": templated,
            "baseline": self.baseline.name if self.baseline is not None else None,
        }
        return sample(
            self.model,
            self.tokenizer,
            prompts,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=self.seed,
            batch_size=self.generation_batch_size,
            add_special_tokens=not templated,
            progress=self.tracker(description, len(prompts)),
            decoding=self.baseline.decoding(self.tokenizer) if self.baseline is not None else None,
        )

    # -- statistics ---------------------------------------------------------------------------------

    def mean(self, values: Sequence[float], scale: float = 1.0) -> Estimate:
        """Mean with a bootstrap CI (``scale=100`` reports a fraction as a percentage)."""
        return mean_ci(values, seed=self.seed, resamples=self.resamples).scaled(scale)

    def statistic(
        self, fn: Callable[[np.ndarray], float], n: int, clusters: Sequence[Any] | None = None
    ) -> Estimate:
        """Any statistic of unit indices, with a (cluster) bootstrap CI."""
        return statistic_ci(fn, n, clusters=clusters, seed=self.seed, resamples=self.resamples)
