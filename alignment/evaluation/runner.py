"""``evaluate()``: load a model once, run the chosen suites, and return (and optionally write) the results."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.evaluation.baselines import get_baseline
from alignment.evaluation.config import EvalConfig
from alignment.evaluation.context import NonFiniteScores, Services, SuiteContext, stereotype_classifier_path
from alignment.evaluation.engine import LoglikEngine
from alignment.evaluation.presets import Preset, load_preset
from alignment.evaluation.registry import SuiteSpec, load_suites, parse_suite_list
from alignment.evaluation.results import RESULTS_FILE, SCHEMA, SCHEMA_VERSION, check_results
from alignment.io import atomic_write_text

PARTIAL_DIR = "partial"  # finished suites of an evaluation that has not written results.json yet


def _skip_reason(spec: SuiteSpec, services: Services) -> str | None:
    """Why a suite cannot run here (a missing prerequisite), or None."""
    if "base_model" in spec.requires and not services.base_spec:
        return "needs a base model: pass --base-model SPEC"
    if "stereotype_classifier" in spec.requires:
        try:
            path = stereotype_classifier_path(services.stereotype_path)
        except ImportError:
            return "the stereotype classifier module (reward.stereotype) is not available"
        if not path.exists():
            return (
                f"no trained stereotype classifier at {path}: train one with "
                "`safealign reward train-stereotype` or pass --stereotype-classifier PATH"
            )
    return None


def _check_data(spec: SuiteSpec) -> None:
    from data_builders.sources import resolve_data_file

    for relative in spec.data:
        resolve_data_file(relative)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alignment.console import err

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bars:

        def tracker(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        yield tracker


def _model_info(spec: str) -> dict[str, Any]:
    from alignment.models import resolve_model

    source = resolve_model(spec)
    info = {"spec": spec, "kind": source.kind, "path": source.path}
    if source.base is not None:
        info["base"] = {"spec": source.base.spec, "path": source.base.path}
    return info


def _files_fingerprint(path: str | None) -> list[tuple[str, int, int]]:
    """Name, size and modification time of every file in a model directory (cheap change detection)."""
    if not path or not Path(path).is_dir():
        return []
    return sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(path).iterdir() if f.is_file()
    )


def _suite_key(plan: Plan, name: str, preset_options: dict[str, Any], limit: int | None) -> str:
    """What a finished suite's result depends on: model files, base, scorers, data split, options, seed."""
    from alignment.io import sha256_json
    from alignment.models import resolve_model

    services, config = plan.services, plan.config
    source = resolve_model(plan.model_spec)
    base = source.base.path if source.base is not None else None
    return sha256_json(
        {
            "suite": name,
            "model": [
                plan.model_spec,
                source.path,
                _files_fingerprint(source.path),
                _files_fingerprint(base),
            ],
            "base_model": services.base_spec,
            "baseline": config.baseline,
            "scorers": [services.toxicity_spec, services.stereotype_path, services.device, services.dtype],
            "preset": plan.preset.name,
            "options": preset_options,
            "limit": limit,
            "seed": config.seed,
            "split": [config.split, config.test_fraction, config.split_seed, config.val_fraction],
            "batching": [
                config.batch_size,
                config.generation_batch_size,
                config.max_batch_tokens,
                config.padding_side,
            ],
        }
    )


def _load_finished(folder: Path | None, name: str, key: str) -> dict[str, Any] | None:
    """A suite result kept by an interrupted evaluation with the same key, if any."""
    path = folder / f"{name}.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return kept if kept.get("key") == key else None


@dataclass
class Plan:
    """A validated evaluation: which suites run, which are skipped and why, with every setting."""

    model_spec: str
    preset: Preset
    names: list[str]
    skipped: dict[str, str]
    services: Services
    config: EvalConfig

    @property
    def to_run(self) -> list[str]:
        return [n for n in self.names if n not in self.skipped]


def plan_evaluation(
    model_spec: str, config: EvalConfig | None = None, *, check_model: bool = True, **settings: Any
) -> Plan:
    """Validate everything that can be checked before a model loads (preset, suites, options, data files,
    prerequisites, the model spec): problems surface as one clear error before any work or output.

    ``settings`` are :class:`EvalConfig` fields that replace those of ``config``."""
    from alignment.models import resolve_model

    config = (config or EvalConfig()).replace(**settings)
    chosen = load_preset(config.preset)
    explicit = config.suites is not None
    names = parse_suite_list(config.suites) if explicit else list(chosen.suites)
    services = Services(
        device=config.device,
        dtype=config.dtype,
        base_spec=config.base_model,
        toxicity_spec=config.toxicity_scorer,
        stereotype_path=config.stereotype_classifier,
    )
    specs = load_suites()
    skipped: dict[str, str] = {}
    for name in names:
        reason = _skip_reason(specs[name], services)
        if reason and explicit:
            raise SafealignError(f"suite {name}: {reason}")
        if reason:
            skipped[name] = reason
        else:
            _check_data(specs[name])
    if check_model:
        resolve_model(model_spec)
        if config.base_model and "kl_to_base" in names and "kl_to_base" not in skipped:
            resolve_model(config.base_model)
    return Plan(model_spec, chosen, names, skipped, services, config)


def evaluate(
    model_spec: str,
    suites: str | Sequence[str] | None = None,
    *,
    config: EvalConfig | None = None,
    out_dir: str | Path | None = None,
    write_samples: bool = True,
    progress: bool = False,
    loaded: tuple[Any, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Evaluate ``model_spec`` on ``suites`` (default: the preset's) and return the results dict.

    Settings come from ``config`` (an :class:`EvalConfig`), updated by ``settings`` (its field names:
    ``preset``, ``limit``, ``seed``, ``split``, ``base_model``, ``batch_size``, ...). ``split="heldout"``
    scores only the held-out part of data that builders train on (``data_builders.splits.assign_split``
    with ``test_fraction`` and ``split_seed``); ``"all"`` scores everything. With ``out_dir``, writes
    ``results.json`` (and ``samples/<suite>.jsonl``) there, atomically and only when every suite ran.
    ``loaded`` passes an already loaded ``(model, tokenizer)``. Suites named explicitly must run (a
    missing prerequisite is an error); suites that come from the preset are skipped, with the reason
    recorded, when a prerequisite (base model, classifier) is missing.
    """
    if suites is not None:
        settings["suites"] = suites.split(",") if isinstance(suites, str) else list(suites)
    plan = plan_evaluation(model_spec, config, check_model=loaded is None, **settings)
    return execute(plan, out_dir=out_dir, write_samples=write_samples, progress=progress, loaded=loaded)


def check_finite_weights(model: Any, model_spec: str) -> None:
    """A model with a NaN or inf weight is refused before any suite: its scores would be meaningless
    (CrowS-Pairs would report 0% stereotyped, a broken model that looks unbiased)."""
    from alignment.stages.progress import first_non_finite

    bad = first_non_finite(model, trainable_only=False)
    if bad is not None:
        raise SafealignError(f"model {model_spec}: weight {bad} holds NaN or inf values; nothing evaluated")


def execute(
    plan: Plan,
    out_dir: str | Path | None = None,
    *,
    write_samples: bool = True,
    progress: bool = False,
    loaded: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Load the model, run the planned suites, build (and optionally write) the results."""
    import torch

    from alignment import __version__
    from alignment.models import load_model
    from alignment.runs import package_versions

    t_start, c_start = time.perf_counter(), time.process_time()
    services, chosen, names, to_run, config = plan.services, plan.preset, plan.names, plan.to_run, plan.config
    model_spec, base_model, limit, seed = plan.model_spec, services.base_spec, config.limit, config.seed
    specs = load_suites()
    skipped = plan.skipped
    t_load = time.perf_counter()
    model, tokenizer = (
        loaded if loaded is not None else load_model(model_spec, device=services.device, dtype=services.dtype)
    )
    load_s = time.perf_counter() - t_load
    check_finite_weights(model, model_spec)
    if services.base_spec == model_spec:
        services.share_base(model, tokenizer)
    torch.manual_seed(seed)
    baseline = get_baseline(config.baseline)
    engine = (baseline.engine if baseline is not None else LoglikEngine)(
        model,
        tokenizer,
        batch_size=config.batch_size,
        max_batch_tokens=config.max_batch_tokens,
        padding_side=config.padding_side,
    )

    suite_entries: dict[str, dict[str, Any]] = {
        name: {"status": "skipped", "reason": reason} for name, reason in skipped.items()
    }
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    # Each finished suite is kept under ``partial/`` until results.json is written, so a rerun of an
    # interrupted evaluation skips what already ran (sampling is seeded per batch, not by suite order).
    partial = Path(out_dir) / PARTIAL_DIR if out_dir is not None and loaded is None else None
    with _progress_bars(progress) as tracker:
        for name in to_run:
            spec = specs[name]
            suite_limit = limit if limit is not None else chosen.limit(name)
            key = _suite_key(plan, name, chosen.suite_options(name), suite_limit) if partial else ""
            kept = _load_finished(partial, name, key)
            if kept is not None:
                rows.extend(kept["rows"])
                suite_entries[name] = {**kept["entry"], "resumed": True}
                samples[name] = kept["samples"]
                continue
            ctx = SuiteContext(
                spec=spec,
                model=model,
                tokenizer=tokenizer,
                engine=engine,
                services=services,
                seed=seed,
                limit=suite_limit,
                split_mode=config.split,
                test_fraction=config.test_fraction,
                split_seed=config.split_seed,
                val_fraction=config.val_fraction,
                resamples=chosen.resamples,
                options=chosen.suite_options(name),
                generation_batch_size=config.generation_batch_size,
                progress=tracker,
                baseline=baseline,
            )
            before = dict(engine.stats)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                output = spec.runner()(ctx)
            except NonFiniteScores as exc:
                raise SafealignError(f"model {model_spec}: {exc}") from exc
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            suite_rows = []
            for metric in output.metrics:
                if metric.metric not in spec.metrics:
                    raise AssertionError(
                        f"suite {name} reports {metric.metric!r}, which its YAML does not define"
                    )
                suite_rows.append(metric.row(name, spec.metrics[metric.metric], ctx.split_used, seed))
            rows.extend(suite_rows)
            n_items = next((m.estimate.n for m in output.metrics if m.group is None), None)
            suite_entries[name] = {
                "status": "ok",
                "title": spec.title,
                "kind": spec.kind,
                "split": ctx.split_used,
                "split_key": spec.split_key if ctx.split_used in ("test", "validation") else None,
                "n": n_items,
                "n_available": ctx.n_available,
                "limit": ctx.limit,
                "data": ctx.data_files,
                "backends": ctx.backends,
                "options": ctx.options,
                "info": output.info,
                "engine": {k: engine.stats[k] - before[k] for k in engine.stats},
                "wall_time_s": round(wall, 3),
                "cpu_time_s": round(cpu, 3),
            }
            samples[name] = output.samples
            if partial is not None:
                finished = {
                    "key": key,
                    "entry": suite_entries[name],
                    "rows": suite_rows,
                    "samples": samples[name],
                }
                atomic_write_text(
                    partial / f"{name}.json", json.dumps(finished, ensure_ascii=False, default=str)
                )

    results = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "safealign_version": __version__,
        "model": _model_info(model_spec) if loaded is None else {"spec": model_spec},
        "base_model": {"spec": base_model} if base_model else None,
        "baseline": baseline.info() if baseline is not None else None,
        "preset": chosen.name,
        "seed": seed,
        "limit": limit,
        "split": {
            "mode": config.split,
            "test_fraction": config.test_fraction,
            "seed": config.split_seed,
            "val_fraction": config.val_fraction,
            "rule": "data_builders.splits.assign_split(group key, test_fraction, seed, val_fraction)",
        },
        "settings": {
            "device": str(engine.device),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "batch_size": config.batch_size,
            "generation_batch_size": config.generation_batch_size,
            "max_batch_tokens": config.max_batch_tokens,
            "padding_side": config.padding_side,
            "prefix_token_id": engine.prefix_id,
            "resamples": chosen.resamples,
            "ci_level": 0.95,
            "ci_method": "percentile bootstrap",
            "toxicity_scorer": services.toxicity_spec,
            "torch_threads": torch.get_num_threads(),
        },
        "suites": {name: suite_entries[name] for name in names},
        "metrics": rows,
        "timings": {
            "load_model_s": round(load_s, 3),
            "total_s": round(time.perf_counter() - t_start, 3),
            "total_cpu_s": round(time.process_time() - c_start, 3),
            **{f"{n}_s": suite_entries[n]["wall_time_s"] for n in to_run},
        },
        "versions": package_versions(),
    }
    check_results(results)
    if out_dir is not None:
        write_results(results, samples if write_samples else {}, out_dir)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
    return results


def write_results(
    results: dict[str, Any], samples: dict[str, list[dict[str, Any]]], out_dir: str | Path
) -> Path:
    """Write ``samples/<suite>.jsonl`` then ``results.json`` (last, so its presence means complete)."""
    from alignment.io import atomic_write_json

    out = Path(out_dir)
    for name, records in samples.items():
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        atomic_write_text(out / "samples" / f"{name}.jsonl", text)
    return atomic_write_json(out / RESULTS_FILE, results)
