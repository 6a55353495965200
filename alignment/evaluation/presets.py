"""Presets (``quick``, ``standard``, ``full``): per-suite item limits and generation settings, in
``presets.yaml``. A preset may also be a YAML file of the same shape (``--preset my_preset.yaml``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alignment.config import load_yaml
from alignment.errors import SafealignError
from alignment.evaluation.registry import load_suites
from alignment.evaluation.stats import DEFAULT_RESAMPLES

PRESET_KEYS = {"description", "suites", "resamples", "limits", "options"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    suites: tuple[str, ...]
    resamples: int = DEFAULT_RESAMPLES
    limits: dict[str, int | None] = field(default_factory=dict, hash=False)
    options: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def limit(self, suite: str) -> int | None:
        return self.limits.get(suite)

    def suite_options(self, suite: str) -> dict[str, Any]:
        """The suite's YAML defaults updated by this preset's options for it."""
        merged = dict(load_suites()[suite].options)
        merged.update(self.options.get(suite, {}))
        return merged


def _build(name: str, data: Any, source: str) -> Preset:
    if not isinstance(data, dict):
        raise SafealignError(f"{source}: preset {name!r} must be a mapping")
    unknown = set(data) - PRESET_KEYS
    if unknown:
        raise SafealignError(f"{source}: preset {name!r} has unknown keys {sorted(unknown)}")
    suites = load_suites()
    listed = data.get("suites", "all")
    names = tuple(suites) if listed == "all" else tuple(listed)
    for key in ("limits", "options"):
        for suite in data.get(key) or {}:
            if suite not in suites:
                raise SafealignError(f"{source}: preset {name!r}, {key}: unknown suite {suite!r}")
    for suite in names:
        if suite not in suites:
            raise SafealignError(f"{source}: preset {name!r}, suites: unknown suite {suite!r}")
    limits = data.get("limits") or {}
    for suite, value in limits.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SafealignError(
                f"{source}: preset {name!r}, limits.{suite}: expected a positive integer or null"
            )
    return Preset(
        name=name,
        description=" ".join(str(data.get("description", "")).split()),
        suites=names,
        resamples=int(data.get("resamples", DEFAULT_RESAMPLES)),
        limits=dict(limits),
        options={k: dict(v) for k, v in (data.get("options") or {}).items()},
    )


@functools.cache
def builtin_presets() -> dict[str, Preset]:
    text = resources.files("alignment.evaluation").joinpath("presets.yaml").read_text(encoding="utf-8")
    return {
        name: _build(name, data, "alignment/evaluation/presets.yaml")
        for name, data in yaml.safe_load(text).items()
    }


def load_preset(name: str) -> Preset:
    """A built-in preset by name, or a preset YAML file by path."""
    presets = builtin_presets()
    if name in presets:
        return presets[name]
    if name.endswith((".yaml", ".yml")):
        return _build(Path(name).stem, load_yaml(name), name)
    raise SafealignError(f"unknown preset {name!r}: use one of {', '.join(presets)} or a preset YAML file")
