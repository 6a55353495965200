"""The suite registry: one YAML file per suite (what it measures, its data, metrics and defaults) and one
small module with ``run(ctx) -> SuiteOutput``.

A suite's YAML (``alignment/evaluation/suites/<name>.yaml``)::

    name: crows_pairs
    title: CrowS-Pairs
    kind: bias                 # bias | retention
    source: Nangia et al. 2020, CrowS-Pairs (EMNLP)
    data: [crows_pairs/crows_pairs_anonymized.csv]   # relative to SAFEALIGN_DATA_DIR
    training_source: true      # builders train on this data: evaluate its held-out part
    split_key: pair group id   # what the held-out split hashes
    requires: []               # generation, toxicity_scorer, stereotype_classifier, base_model
    options: {}                # defaults a preset may override
    metrics:
      pct_stereotype: {ideal: 50, better: closer, headline: true, unit: "%", description: ...,
                       paired: {outcome: stereotyped, scale: 100}}   # how to recompute it from samples

``paired`` (headline metrics) says how the metric follows from the per-item sample records, so the report
can compare two models item by item (:mod:`alignment.evaluation.paired`).

Adding a suite: write the YAML and the module next to each other; the registry finds them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from alignment.errors import SafealignError
from alignment.evaluation.paired import PairedForm, parse_paired

KINDS = ("bias", "retention")
BETTER = ("higher", "lower", "closer")
REQUIREMENTS = ("generation", "toxicity_scorer", "stereotype_classifier", "base_model")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: its ideal value and which direction is better (``closer`` = to the ideal)."""

    name: str
    description: str
    better: str
    ideal: float | None = None
    unit: str = ""
    headline: bool = False
    paired: PairedForm | None = None  # how to recompute it from sample records (paired comparisons)


@dataclass(frozen=True)
class SuiteSpec:
    """A registered suite: its YAML description plus the module that runs it."""

    name: str
    title: str
    kind: str
    description: str
    source: str
    data: tuple[str, ...]
    training_source: bool
    split_key: str
    requires: tuple[str, ...]
    options: dict[str, Any] = field(hash=False)
    metrics: dict[str, MetricInfo] = field(hash=False)
    module: str = ""

    def runner(self) -> Callable:
        """The suite's ``run(ctx) -> SuiteOutput`` function."""
        return importlib.import_module(self.module).run


def _parse(name: str, text: str) -> SuiteSpec:
    source = f"alignment/evaluation/suites/{name}.yaml"
    data = yaml.safe_load(text) or {}
    required = ("name", "title", "kind", "description", "source", "metrics")
    missing = [k for k in required if k not in data]
    if missing:
        raise SafealignError(f"{source}: missing keys {', '.join(missing)}")
    if data["name"] != name:
        raise SafealignError(f"{source}: name {data['name']!r} does not match the file name")
    if data["kind"] not in KINDS:
        raise SafealignError(f"{source}: kind must be one of {', '.join(KINDS)}")
    unknown = set(data.get("requires", [])) - set(REQUIREMENTS)
    if unknown:
        raise SafealignError(f"{source}: unknown requirements {sorted(unknown)}")
    metrics = {}
    for metric, info in data["metrics"].items():
        if info.get("better") not in BETTER:
            raise SafealignError(f"{source}: metric {metric!r} needs better: one of {', '.join(BETTER)}")
        metrics[metric] = MetricInfo(
            name=metric,
            description=" ".join(str(info.get("description", "")).split()),
            better=info["better"],
            ideal=info.get("ideal"),
            unit=info.get("unit", ""),
            headline=bool(info.get("headline", False)),
            paired=parse_paired(source, metric, info.get("paired")),
        )
    return SuiteSpec(
        name=name,
        title=data["title"],
        kind=data["kind"],
        description=" ".join(str(data["description"]).split()),
        source=data["source"],
        data=tuple(data.get("data", [])),
        training_source=bool(data.get("training_source", False)),
        split_key=data.get("split_key", ""),
        requires=tuple(data.get("requires", [])),
        options=dict(data.get("options", {})),
        metrics=metrics,
        module=f"alignment.evaluation.suites.{name}",
    )


@functools.cache
def load_suites() -> dict[str, SuiteSpec]:
    """Every suite with a YAML file in ``alignment/evaluation/suites/``, in a stable order."""
    folder = resources.files("alignment.evaluation.suites")
    specs = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            specs[name] = _parse(name, entry.read_text(encoding="utf-8"))
    order = {"bias": 0, "retention": 1}
    return dict(sorted(specs.items(), key=lambda kv: (order[kv[1].kind], SUITE_ORDER.get(kv[0], 99), kv[0])))


SUITE_ORDER = {
    "crows_pairs": 0,
    "stereoset": 1,
    "bbq": 2,
    "toxicity": 3,
    "honest": 4,
    "counterfactual": 5,
    "stereotype_rate": 6,
    "truthfulqa_mc": 10,
    "hellaswag": 11,
    "perplexity": 12,
    "kl_to_base": 13,
}


def get_suite(name: str) -> SuiteSpec:
    """The suite called ``name``, or one clear error listing the suites."""
    suites = load_suites()
    if name not in suites:
        import difflib

        close = difflib.get_close_matches(name, suites, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SafealignError(f"unknown suite {name!r}{hint}; available: {', '.join(suites)}")
    return suites[name]


def parse_suite_list(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> validated, de-duplicated suite names (``all`` = every suite)."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise SafealignError("no suites given: pass --suites a,b (see `safealign eval --list`)")
    out: list[str] = []
    for name in names:
        for resolved in load_suites() if name == "all" else [get_suite(name).name]:
            if resolved not in out:
                out.append(resolved)
    return out
