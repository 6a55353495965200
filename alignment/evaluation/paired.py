"""Paired comparison of two evaluations of the same items (a base model and a trained stage).

Every suite writes one record per item to ``samples/<suite>.jsonl``. A headline metric that declares a
``paired:`` entry in its suite's YAML can be recomputed from those records, so two evaluations are
compared item by item instead of through two independent intervals::

    pct_stereotype: {..., paired: {outcome: stereotyped, scale: 100}}   # a proportion of 0/1 outcomes
    mc2:            {..., paired: {mean: mc2, scale: 100}}               # a mean of a per-item number
    ss:             {..., paired: {function: paired_scores, cluster: target}}  # anything else

``function`` names ``fn(records, options, metric) -> statistic`` in the suite's module: given the item
records (in a fixed order), the suite's options and the metric's name, it returns
``statistic(indices) -> float``, the metric over those items (indices repeat in a bootstrap draw).
``key`` (default ``id``) is the record field the items are matched on; ``cluster`` names a field whose
items are resampled together. ``outcome`` metrics get an exact McNemar test, every other metric a paired
bootstrap p-value. A new suite declares its own entries the same way; a metric without one is compared
through independent intervals, and the report says so.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignment.errors import SafealignError
from alignment.evaluation.stats import DEFAULT_RESAMPLES, PairedEstimate, mcnemar_exact, paired_bootstrap
from alignment.io import file_lines

Statistic = Callable[[np.ndarray], float]
KEYS = ("outcome", "mean", "function", "cluster", "key", "scale")


class Unpaired(Exception):
    """Two evaluations of a metric cannot be paired; the message says why, in a few words."""


@dataclass(frozen=True)
class PairedForm:
    """How a headline metric is recomputed from its suite's sample records (one ``paired:`` entry)."""

    outcome: str | None = None
    mean: str | None = None
    function: str | None = None
    cluster: str | None = None
    key: str = "id"
    scale: float = 1.0

    @property
    def test(self) -> str:
        """The test that gives this metric's p-value."""
        if self.outcome:
            return "McNemar exact"
        return "paired cluster bootstrap" if self.cluster else "paired bootstrap"

    def statistic(
        self, module: str, metric: str, records: Sequence[dict[str, Any]], options: dict[str, Any]
    ) -> Statistic:
        """The metric over item indices of ``records``."""
        if self.function:
            try:
                return getattr(importlib.import_module(module), self.function)(records, options, metric)
            except KeyError as exc:
                raise Unpaired(f"samples or options have no {exc} field") from None
        values = field_values(records, self.outcome or self.mean or "")
        scale = self.scale
        return lambda idx: scale * float(values[idx].mean())


def parse_paired(source: str, metric: str, data: Any) -> PairedForm | None:
    """A metric's ``paired:`` entry, checked: exactly one of outcome, mean or function."""
    if data is None:
        return None
    where = f"{source}: metric {metric!r} paired"
    if not isinstance(data, dict):
        raise SafealignError(f"{where}: expected a mapping with one of outcome, mean, function")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise SafealignError(f"{where}: unknown keys {unknown}; allowed: {', '.join(KEYS)}")
    kinds = [k for k in ("outcome", "mean", "function") if data.get(k)]
    if len(kinds) != 1:
        raise SafealignError(f"{where}: give exactly one of outcome, mean, function (got {kinds or 'none'})")
    return PairedForm(
        outcome=data.get("outcome"),
        mean=data.get("mean"),
        function=data.get("function"),
        cluster=data.get("cluster"),
        key=str(data.get("key", "id")),
        scale=float(data.get("scale", 1.0)),
    )


def field_values(records: Sequence[dict[str, Any]], field: str) -> np.ndarray:
    """One number per record from ``field`` (booleans as 0/1), or :class:`Unpaired` when it is missing."""
    try:
        return np.array([float(r[field]) for r in records], dtype=float)
    except KeyError:
        raise Unpaired(f"samples have no {field!r} field") from None
    except (TypeError, ValueError):
        raise Unpaired(f"samples' {field!r} field is not a number") from None


def load_samples(eval_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every ``samples/<suite>.jsonl`` of an evaluation directory (empty when it has none)."""
    folder = Path(eval_dir) / "samples"
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        records = []
        for row, line in enumerate(file_lines(path.read_text(encoding="utf-8")), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SafealignError(
                    f"{path}:{row}: not valid JSON ({exc.msg}); rerun the evaluation"
                ) from exc
        out[path.stem] = records
    return out


def _keys(records: Sequence[dict[str, Any]], key: str) -> list[str]:
    """Item keys; a key that repeats (the same prompt twice) is told apart by its occurrence number."""
    seen: dict[str, int] = {}
    out = []
    for r in records:
        if key not in r:
            raise Unpaired(f"samples have no {key!r} field to match items on")
        value = str(r[key])
        seen[value] = seen.get(value, 0) + 1
        out.append(value if seen[value] == 1 else f"{value}#{seen[value]}")
    return out


def match_items(
    base: Sequence[dict[str, Any]], stage: Sequence[dict[str, Any]], key: str = "id"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both record lists in the base's item order, or :class:`Unpaired` naming how the item sets differ.

    >>> match_items([{"id": 1, "x": 0}, {"id": 2, "x": 1}], [{"id": 2, "x": 5}, {"id": 1, "x": 6}])[1]
    [{'id': 1, 'x': 6}, {'id': 2, 'x': 5}]
    """
    base_keys, stage_keys = _keys(base, key), _keys(stage, key)
    if set(base_keys) != set(stage_keys):
        only_base = sorted(set(base_keys) - set(stage_keys))
        only_stage = sorted(set(stage_keys) - set(base_keys))
        example = (only_base or only_stage)[0]
        raise Unpaired(
            f"item sets differ ({len(only_base)} only in base, {len(only_stage)} only in the stage, "
            f"e.g. {example!r})"
        )
    position = {k: i for i, k in enumerate(stage_keys)}
    return list(base), [stage[position[k]] for k in base_keys]


def _check_value(side: str, recomputed: float, reported: float | None) -> None:
    if reported is None or not math.isclose(recomputed, reported, rel_tol=1e-4, abs_tol=1e-5):
        raise Unpaired(f"{side} samples give {recomputed:.6g}, its results say {reported}")


@dataclass(frozen=True)
class Side:
    """One evaluation of one suite: its sample records, suite options and the reported metric value."""

    records: Sequence[dict[str, Any]]
    options: dict[str, Any]
    value: float | None


def compare_metric(
    module: str,
    metric: str,
    form: PairedForm,
    base: Side,
    stage: Side,
    *,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> PairedEstimate:
    """Stage minus base of one metric over matched items, with its paired interval and p-value.

    Raises :class:`Unpaired` when the two cannot be paired: no samples, different items or options, or
    samples that do not reproduce the reported values (the metric's definition changed in between).
    """
    if not base.records or not stage.records:
        raise Unpaired("no per-item samples")
    if base.options != stage.options:
        raise Unpaired("suite options differ")
    base_records, stage_records = match_items(base.records, stage.records, form.key)
    base_stat = form.statistic(module, metric, base_records, base.options)
    stage_stat = form.statistic(module, metric, stage_records, stage.options)
    everything = np.arange(len(base_records))
    _check_value("base", base_stat(everything), base.value)
    _check_value("stage", stage_stat(everything), stage.value)
    clusters = None
    if form.cluster:
        clusters = [str(r.get(form.cluster)) for r in base_records]
        if clusters != [str(r.get(form.cluster)) for r in stage_records]:
            raise Unpaired(f"items' {form.cluster!r} differ between the two evaluations")
    estimate = paired_bootstrap(
        base_stat, stage_stat, len(base_records), clusters=clusters, seed=seed, resamples=resamples
    )
    if not form.outcome:
        return estimate
    before, after = field_values(base_records, form.outcome), field_values(stage_records, form.outcome)
    if not np.isin(np.concatenate([before, after]), (0.0, 1.0)).all():
        raise Unpaired(f"samples' {form.outcome!r} field is not 0/1")
    p, discordant = mcnemar_exact(before.astype(bool), after.astype(bool))
    return PairedEstimate(estimate.value, estimate.low, estimate.high, p, estimate.n, form.test, discordant)
