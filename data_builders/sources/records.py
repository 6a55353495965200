"""Typed records returned by the source loaders (frozen: a loaded dataset is not edited in place)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CrowsPair:
    """One CrowS-Pairs minimal pair. ``sent_more`` is always the more stereotypical sentence.

    ``direction`` is ``stereo`` (``sent_more`` states a stereotype about a disadvantaged group) or
    ``antistereo`` (``sent_less`` violates one about that group). ``group`` is the split key: the pair id,
    or the id of the first pair with the same (normalised) sentences.
    """

    id: str
    sent_more: str
    sent_less: str
    direction: str
    bias_type: str
    group: str = ""
    row: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StereoSetItem:
    """One StereoSet example: a context and its three candidate sentences (or continuations)."""

    id: str
    task: str
    target: str
    bias_type: str
    context: str
    sentences: dict[str, str] = field(hash=False)

    @property
    def group(self) -> str:
        """The split key: the target term, so a target is never on both sides of a split."""
        return self.target


@dataclass(frozen=True)
class RewritePair:
    """A biased/unsafe text and its safe rewrite, with an optional label and bias type."""

    id: str
    text: str
    rewrite: str
    label: str | None = None
    bias_type: str | None = None
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PromptRecord:
    """A prompt for generation or RL, tagged with its source pool and the social group it concerns."""

    text: str
    source: str
    group: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class CounterfactualRow:
    """A neutral sentence and its rewrites that mention a group (SR-LLM counterfactual set).

    ``variants`` maps the column name (``gender_a_man``) to the text; :func:`axis_of` gives ``gender``.
    """

    id: str
    original: str
    variants: dict[str, str] = field(hash=False)


def axis_of(column: str) -> str:
    """The bias axis of a counterfactual column: ``race_an_Asian_person`` -> ``race``.

    >>> axis_of("religion_a_Muslim")
    'religion'
    """
    return column.split("_", 1)[0]
