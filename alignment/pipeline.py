"""The main job: build data, evaluate the base model, then train and evaluate each stage in turn, and
write one comparison report.

A pipeline recipe (``recipes/<model>/pipeline.yaml``)::

    name: smollm2-quick              # run directory: $SAFEALIGN_RUNS/<name>
    model: smollm2-135m-instruct     # the base model
    seed: 0
    split: {test_fraction: 0.2, seed: 0}   # held-out groups, shared by builders and evaluation
    data:                            # datasets to build (data_builders BuildConfig fields, less out/seed)
      rewrite_sft: {kind: sft, source: rewrite_pairs}
    reward: {...}                    # reward spec for RL stages (reward.registry.build_reward)
    stereotype_classifier: {mode: head}   # train one into the run dir (or give a trained directory)
    stages:                          # in order; each starts from the previous stage's saved model
      - {name: sft, type: sft, dataset: rewrite_sft, config: {max_steps: 40}}
    evaluation: {preset: quick, suites: null, limit: null}
    report: {tolerance: 2.0}

Layout of a run directory::

    manifest.json  pipeline.json  metrics.json  report.md  report.html  report_files/
    data/<dataset>/      built datasets          stages/<stage>/   stage run dirs (model/, checkpoints/)
    stereotype_classifier/   the classifier trained for the run (when the recipe asks for one)
    eval/<stage>/        results.json + samples/ (``base`` for the base model)

Resuming works at stage granularity: ``pipeline.json`` records, for every stage and evaluation, a hash
of its own config chained with the hashes of everything upstream. A rerun skips work whose outputs exist
with the same chained hash, continues an interrupted stage from its last checkpoint, and redoes (from
scratch) a stage whose upstream changed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignment.child import run_safealign, stop_children
from alignment.config import check_keys, from_dict, load_yaml
from alignment.device import available_memory_gb, choose_threads, pick_device
from alignment.errors import SafealignError
from alignment.evaluation.config import EvalConfig
from alignment.io import atomic_dir, atomic_write_json, atomic_write_text, read_json_object, sha256_json
from alignment.models.loader import has_weights
from alignment.paths import runs_dir
from alignment.report import ReportConfig, print_report, write_report
from alignment.stages.registry import STAGES, stage_entry

PIPELINE_FILE = "pipeline.json"
DEFAULT_PRESET = "pipeline"  # sized so a 1.5-point paired change in retention is detectable (docs/metrics.md)
BASE = "base"
REWRITE = "rerun the pipeline to rewrite it"


@dataclass
class SplitSettings:
    """Which groups are held out; the same rule for data builders and evaluation."""

    test_fraction: float = field(default=0.2, metadata={"help": "fraction of groups held out for evaluation"})
    val_fraction: float = field(
        default=0.1,
        metadata={
            "help": "fraction of groups carved from the training side as a validation split: never trained "
            "on, scored with `evaluation.split: validation` to choose recipes"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the group hash"})


# Evaluation settings the pipeline fills in itself: the run's seed and split rule, and the base model.
PIPELINE_EVAL_KEYS = {
    "seed": "the top-level 'seed'",
    "test_fraction": "'split.test_fraction'",
    "val_fraction": "'split.val_fraction'",
    "split_seed": "'split.seed'",
    "base_model": "the top-level 'model'",
    "baseline": "the top-level 'baselines' (one report column each)",
}


# Stage config keys that, like a stage's `dataset`, may name a key of `data` (its built directory is passed)
DATA_REFERENCES = ("ptx_dataset",)


@dataclass
class StagePlan:
    """One training stage of the pipeline."""

    name: str = field(metadata={"help": "stage name (column in the report, folder in the run dir)"})
    type: str = field(metadata={"help": f"stage type: {', '.join(STAGES)}"})
    dataset: str = field(default="", metadata={"help": "a key of `data`, or a built dataset directory"})
    config: dict[str, Any] = field(default_factory=dict, metadata={"help": "stage config fields"})

    def __post_init__(self) -> None:
        if self.type not in STAGES:
            raise ValueError(f"stage {self.name!r}: type {self.type!r} is not one of {', '.join(STAGES)}")
        if self.name == BASE or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {self.name!r} must be alphanumeric (with - or _) and not 'base'")


@dataclass
class BaselinePlan:
    """One training-free baseline column: a name, and optionally fewer suites than the stages get
    (Self-Debias costs about 17 forward passes per token, so a recipe may keep it to CrowS-Pairs)."""

    name: str = field(metadata={"help": "prompted or self_debias (docs/metrics.md)"})
    suites: list[str] | None = field(
        default=None, metadata={"help": "suites to evaluate it on (default: the same as every stage)"}
    )


@dataclass
class PipelineConfig:
    """A whole pipeline recipe."""

    name: str = field(
        default="pipeline", metadata={"help": "run name: the run directory under SAFEALIGN_RUNS"}
    )
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "base model spec"})
    seed: int = field(default=0, metadata={"help": "seed for training and evaluation"})
    split: SplitSettings = field(default_factory=SplitSettings)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    reward: Any = field(default=None, metadata={"help": "reward spec for RL stages"})
    stereotype_classifier: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "a trained classifier directory, or a mapping of `safealign reward train-stereotype` "
            "options to train one into the run directory (used by the stereotype_rate suite and rewards)"
        },
    )
    stages: list[StagePlan] = field(default_factory=list)
    baselines: list[BaselinePlan] = field(
        default_factory=list,
        metadata={
            "help": "training-free baselines evaluated on the base model like a stage, one report column "
            "each: a name (prompted, self_debias; docs/metrics.md) or {name, suites}"
        },
    )
    evaluation: EvalConfig = field(
        default_factory=lambda: EvalConfig(preset=DEFAULT_PRESET),
        metadata={"help": "`safealign eval` settings for the base model and every stage"},
    )
    report: ReportConfig = field(default_factory=ReportConfig)
    overlap_evaluation: bool = field(
        default=True,
        metadata={
            "help": "on a CPU with two or more threads to give, evaluate each model in a second lane while "
            "the next stage trains, the threads split between the lanes; false: one step at a time"
        },
    )
    overlap_memory_gb: float = field(
        default=10.0,
        metadata={
            "help": "evaluate beside training only when the system has this much memory available when the "
            "run starts: a stage and an evaluation are then resident together (SmolLM2's default run: 8.5 GB "
            "in all with an evaluation beside PPO, against PPO's 5.7 GB and the pipeline's 0.6 in turn)"
        },
    )


SECTIONS = {"split": SplitSettings, "evaluation": EvalConfig, "report": ReportConfig}


def parse_pipeline(raw: dict[str, Any], source: str) -> PipelineConfig:
    """Validate a recipe mapping section by section (unknown keys and wrong types name file and key)."""
    raw = dict(raw)
    sections = {}
    for key, cls in SECTIONS.items():
        value = raw.pop(key, None) or {}
        if not isinstance(value, dict):
            raise SafealignError(f"{source}, key {key!r}: expected a mapping")
        if cls is EvalConfig:
            value = _evaluation_section(value, sections["split"], f"{source}:{key}")
        sections[key] = from_dict(cls, value, f"{source}:{key}")
    stages_raw = raw.pop("stages", None) or []
    if not isinstance(stages_raw, list):
        raise SafealignError(f"{source}, key 'stages': expected a list of stages")
    stages = []
    for i, entry in enumerate(stages_raw):
        if not isinstance(entry, dict):
            raise SafealignError(f"{source}:stages[{i}]: expected a mapping with name, type, dataset, config")
        stages.append(from_dict(StagePlan, entry, f"{source}:stages[{i}]"))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise SafealignError(f"{source}, key 'stages': stage names repeat ({', '.join(names)})")
    baselines = _parse_baselines(raw.pop("baselines", None) or [], names, source)
    top = check_keys(raw, (PipelineConfig,), source)
    data = top.get("data", {})
    for key, spec in data.items():
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", str(key)):
            raise SafealignError(
                f"{source}:data: key {key!r} names a folder inside the run directory: use letters, digits, "
                "'.', '_' and '-' (no slashes)"
            )
        if not isinstance(spec, dict):
            raise SafealignError(f"{source}:data.{key}: expected a mapping of build options")
    for stage in stages:
        named = {"dataset": stage.dataset, **{k: stage.config.get(k) for k in DATA_REFERENCES}}
        for key, value in named.items():
            if value and value not in data and not Path(str(value)).exists():
                where = "dataset" if key == "dataset" else f"config.{key}"
                raise SafealignError(
                    f"{source}:stages.{stage.name}.{where}: {value!r} is neither a key of 'data' "
                    f"({', '.join(data) or 'none'}) nor an existing directory"
                )
    return PipelineConfig(**top, stages=stages, baselines=baselines, **sections)


def _parse_baselines(raw: Any, stages: list[str], source: str) -> list[BaselinePlan]:
    """Known baseline names, each once, none named like a stage; suites that exist."""
    from alignment.evaluation.baselines import BASELINES
    from alignment.evaluation.registry import load_suites

    where = f"{source}, key 'baselines'"
    if not isinstance(raw, list):
        raise SafealignError(f"{where}: expected a list of names or {{name, suites}} mappings")
    plans = []
    for i, entry in enumerate(raw):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            raise SafealignError(f"{where}[{i}]: expected a name or a mapping with name and suites")
        plan = from_dict(BaselinePlan, entry, f"{source}:baselines[{i}]")
        if plan.name not in BASELINES:
            raise SafealignError(f"{where}: unknown baseline {plan.name!r}; use {', '.join(BASELINES)}")
        if plan.name in stages:
            raise SafealignError(f"{where}: {plan.name!r} is also a stage name")
        unknown = sorted(set(plan.suites or []) - set(load_suites()))
        if unknown:
            raise SafealignError(
                f"{where}[{i}]: unknown suite {unknown[0]!r}; use {', '.join(load_suites())}"
            )
        plans.append(plan)
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise SafealignError(f"{where}: names repeat ({', '.join(names)})")
    return plans


def _evaluation_section(value: dict[str, Any], split: SplitSettings, source: str) -> dict[str, Any]:
    """The recipe's ``evaluation`` mapping with the pipeline's default preset and the run's split rule;
    keys the pipeline sets itself are refused, naming where they belong."""
    for key, owner in PIPELINE_EVAL_KEYS.items():
        if key in value:
            raise SafealignError(f"{source}, key {key!r}: set by the pipeline from {owner}")
    rule = {"test_fraction": split.test_fraction, "val_fraction": split.val_fraction}
    return {"preset": DEFAULT_PRESET, **value, **rule, "split_seed": split.seed}


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline recipe and apply overrides (model, name, seed, preset, limit, suites, eval_split,
    only)."""
    raw = load_yaml(path)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("preset", "limit", "suites", "eval_split"):
            if not isinstance(raw.get("evaluation") or {}, dict):
                raise SafealignError(f"{path}, key 'evaluation': expected a mapping")
            raw["evaluation"] = {**(raw.get("evaluation") or {}), key.removeprefix("eval_"): value}
        elif key == "only":
            wanted = [s.strip() for s in value.split(",") if s.strip()]
            known = [s.get("name") for s in raw.get("stages", []) if isinstance(s, dict)]
            unknown = sorted(set(wanted) - set(known))
            if unknown:
                raise SafealignError(
                    f"--stages: unknown stage(s) {', '.join(unknown)}; recipe has {', '.join(known)}"
                )
            raw["stages"] = [s for s in raw.get("stages", []) if s.get("name") in wanted]
        else:
            raw[key] = value
    return parse_pipeline(raw, str(path))


class PipelineState:
    """``pipeline.json``: chained hashes and status of every build, stage and evaluation."""

    def __init__(self, run_dir: Path) -> None:
        self.lock = threading.Lock()  # the evaluation lane writes from its own thread
        self.path = run_dir / PIPELINE_FILE
        self.data: dict[str, Any] = {"stages": {}, "evals": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SafealignError(f"{self.path}: not valid JSON ({exc}); remove it to start over") from exc

    def get(self, section: str, name: str) -> dict[str, Any]:
        return self.data.setdefault(section, {}).get(name, {})

    def set(self, section: str, name: str, **fields: Any) -> None:
        with self.lock:
            self.data.setdefault(section, {})[name] = {**self.get(section, name), **fields}
            atomic_write_json(self.path, self.data)


def eval_config(cfg: PipelineConfig, classifier: str | None, base_model: str | None) -> EvalConfig:
    """The evaluation settings of every model of the run: the recipe's, with the run's seed and split."""
    ev = cfg.evaluation
    return ev.replace(
        seed=cfg.seed,
        test_fraction=cfg.split.test_fraction,
        val_fraction=cfg.split.val_fraction,
        split_seed=cfg.split.seed,
        base_model=base_model,
        stereotype_classifier=ev.stereotype_classifier or classifier,
    )


STEREOTYPE_REWARDS = ("stereotype", "anti_stereotype")


def with_classifier(spec: Any, classifier: str | None) -> Any:
    """Point stereotype reward components that name no model at the pipeline's classifier.

    >>> with_classifier({"components": [{"reward": "anti_stereotype"}, {"reward": "non_toxic"}]}, "clf")
    {'components': [{'reward': 'anti_stereotype', 'args': {'model': 'clf'}}, {'reward': 'non_toxic'}]}
    """
    if classifier is None:
        return spec
    if isinstance(spec, list):
        return [with_classifier(item, classifier) for item in spec]
    if isinstance(spec, dict):
        if "components" in spec:
            return {**spec, "components": with_classifier(spec["components"], classifier)}
        if spec.get("reward") in STEREOTYPE_REWARDS and "model" not in (spec.get("args") or {}):
            return {**spec, "args": {**(spec.get("args") or {}), "model": classifier}}
    if spec in STEREOTYPE_REWARDS:
        return {"reward": spec, "args": {"model": classifier}}
    return spec


def say(message: str) -> None:
    from alignment.console import err

    err.print(message)


def copy_dir(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Replace ``target`` with a copy of ``source`` (without the entries named in ``skip``), atomically."""
    with atomic_dir(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skip))


class Pipeline:
    """Runs one pipeline recipe in its run directory (see the module docstring)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        root: str | Path | None = None,
        force: bool = False,
        source: str = "pipeline",
        threads: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = str(source)  # the recipe file, named in errors
        self.run_dir = Path(root or runs_dir()) / cfg.name
        self.force = force
        self.threads = threads  # torch threads per step; None: chosen at each step's start
        # with an evaluation lane: the threads the two lanes share while a stage trains, and the lane's jobs
        self.shared_threads: tuple[int, str] | None = None
        self.lane_jobs: list[Future] = []
        # steps shared between runs (an ablation's), by chained hash: shared/{evals,stages}/<hash>
        self.shared: Path | None = None
        self.state: PipelineState | None = None
        self.datasets: dict[str, dict[str, Any]] = {}
        self.classifier: str | None = None
        self.classifier_info: dict[str, Any] = {}

    # -- data ---------------------------------------------------------------------------------------------
    def build_data(self) -> None:
        from data_builders.builders.build import run_build

        for key, spec in self.cfg.data.items():
            result = run_build(self.build_config(key, spec))
            prov = result.provenance
            self.datasets[key] = {
                "path": str(result.out),
                "fingerprint": prov.get("fingerprint"),
                "sources": prov.get("sources"),
                "rows": prov.get("rows"),
                "strategy": prov.get("strategy"),
            }
            self.state.set("data", key, fingerprint=prov.get("fingerprint"))
            say(f"data {key}: {'built' if result.rebuilt else 'up to date'} ({result.out})")

    def build_config(self, key: str, spec: dict[str, Any]) -> Any:
        """The data builders' config of ``data.<key>`` (split settings from the recipe, output in the run)."""
        from data_builders.builders.config import BuildConfig

        split = self.cfg.split
        options = {
            "seed": split.seed,
            "test_fraction": split.test_fraction,
            "val_fraction": split.val_fraction,
            **spec,
        }
        options["out"] = str(self.run_dir / "data" / key)
        return from_dict(BuildConfig, options, f"{self.source}:data.{key}")

    def train_classifier(self) -> str:
        """The stereotype classifier's hash (empty when the recipe has none); sets ``self.classifier``."""
        spec = self.cfg.stereotype_classifier
        if spec is None:
            return ""
        if isinstance(spec, str):
            from reward.stereotype import StereotypeClassifier

            StereotypeClassifier.load(spec)  # a clear error now rather than in the first reward call
            self.classifier = spec
            self.classifier_info = {"path": spec}
            return sha256_json({"path": spec})
        from reward.stereotype.train import StereotypeTrainConfig

        out = self.run_dir / "stereotype_classifier"
        options = {
            "test_fraction": self.cfg.split.test_fraction,
            "val_fraction": self.cfg.split.val_fraction,
            "split_seed": self.cfg.split.seed,
            "seed": self.cfg.seed,
            **spec,
            "out": str(out),
        }
        train_cfg = from_dict(StereotypeTrainConfig, options, "pipeline stereotype_classifier")
        digest = sha256_json(dataclasses.asdict(train_cfg))
        done = self.state.get("classifier", "stereotype")
        if done.get("hash") == digest and out.is_dir() and not has_weights(out):
            say(f"[yellow]stereotype classifier: {out} has lost its weights; training it again[/]")
        if self.force or done.get("hash") != digest or not has_weights(out):
            self.state.set("classifier", "stereotype", hash=digest, status="running")
            config_file = self.write_config("stereotype_classifier", dataclasses.asdict(train_cfg))
            self.step(
                "classifier",
                "stereotype",
                "training the stereotype classifier",
                "reward",
                "train-stereotype",
                "--config",
                config_file,
            )
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            self.state.set("classifier", "stereotype", status="completed", metrics=metrics)
        else:
            say("[green]stereotype classifier: up to date[/]")
        self.classifier = str(out)
        self.classifier_info = {
            "path": str(out),
            "hash": digest,
            "metrics": done.get("metrics") or self.state.get("classifier", "stereotype").get("metrics"),
        }
        return digest

    def dataset_path(self, stage: StagePlan) -> tuple[str, str]:
        """(path, fingerprint) of a stage's dataset."""
        return self.data_path(stage.dataset)

    def data_path(self, name: str) -> tuple[str, str]:
        """(path, fingerprint) of a key of `data` (its built directory; planned, before the build), or of
        a directory given as it is."""
        if name in self.datasets:
            info = self.datasets[name]
            return info["path"], info["fingerprint"]
        if name in self.cfg.data:
            return str(self.run_dir / "data" / name), ""
        return name, sha256_json(name)

    def data_references(self, stage: StagePlan) -> dict[str, tuple[str, str]]:
        """The stage config's other datasets (:data:`DATA_REFERENCES`) that are set: key -> (path,
        fingerprint)."""
        return {k: self.data_path(str(stage.config[k])) for k in DATA_REFERENCES if stage.config.get(k)}

    # -- child steps --------------------------------------------------------------------------------------
    def write_config(self, name: str, values: dict[str, Any]) -> Path:
        """A step's resolved config as YAML under ``configs/`` (what its child process reads)."""
        path = self.run_dir / "configs" / f"{name}.yaml"
        atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(values, default=str)), sort_keys=False))
        return path

    def step(self, section: str, name: str, title: str, *args: Any) -> None:
        """Run ``safealign ARGS`` in its own process; its wall time and threads go into ``pipeline.json``.

        Alone, a step gets the threads the CPU has free right now. While the evaluation lane runs beside the
        training chain, each side gets half of the threads chosen when the run started (a stage that starts
        while the lane is idle gets them all), and an evaluation writes its output to ``logs/`` instead of
        the terminal."""
        # a stage that starts while the lane has nothing to do takes every thread: the lane only gets work
        # between stages, so nothing starts beside it
        lane_busy = any(not job.done() for job in self.lane_jobs)
        beside = self.shared_threads is not None and (section == "evals" or lane_busy)
        if beside:
            budget, why = self.shared_threads
            threads = budget // 2 if section == "evals" else budget - budget // 2
            other = "training" if section == "evals" else "evaluation"
            why = f"half of {budget}, the other half for the {other} lane ({why})"
        else:
            threads, why = choose_threads(self.threads)
        log = self.run_dir / "logs" / f"{section[:-1]}-{name}.log" if beside and section == "evals" else None
        where = f"; output in {log}" if log else ""
        say(f"[bold]{title}[/] [dim]({threads} torch thread{'s' * (threads > 1)}: {why}{where})[/]")
        started = time.perf_counter()
        run_safealign(args, title.split(" (")[0], threads, log=log)
        wall = round(time.perf_counter() - started, 1)
        self.state.set(section, name, wall_s=wall, threads=threads, beside_training=beside)
        if log:
            say(f"[green]{title}: done in {wall:.0f} s[/]")

    # -- evaluation ---------------------------------------------------------------------------------------
    def evaluate(
        self, name: str, model: str, chain: str, baseline: BaselinePlan | None = None
    ) -> dict[str, Any]:
        """Evaluate ``model`` (as ``baseline``, on its suites if it names them) into ``eval/<name>`` in a
        child process, unless done with the same hash."""
        from alignment.evaluation import load_results

        out = self.run_dir / "eval" / name
        config = eval_config(self.cfg, self.classifier, self.base_path)
        if baseline is not None:
            config = config.replace(baseline=baseline.name, suites=baseline.suites or config.suites)
        settings = dataclasses.asdict(config)
        digest = sha256_json({"chain": chain, "eval": settings})
        done = self.state.get("evals", name)
        if not self.force and done.get("hash") == digest and (out / "results.json").is_file():
            say(f"[green]eval {name}: up to date[/]")
            return load_results(out)
        shared = self.shared_step("evals", digest)
        if shared is not None and not self.force and (shared / "results.json").is_file():
            copy_dir(shared, out)
            self.reused("evals", name, shared, hash=digest)
            return load_results(out)
        self.state.set("evals", name, hash=digest, status="running")
        config_file = self.write_config(f"eval-{name}", settings)
        self.step(
            "evals", name, f"eval {name}", "eval", "--model", model, "--config", config_file, "--out", out
        )
        self.state.set("evals", name, status="completed")
        if shared is not None:
            self.share("evals", name, out, shared)
        return load_results(out)

    def shared_step(self, section: str, digest: str) -> Path | None:
        """Where a step with this chained hash is kept for other runs, or None outside an ablation."""
        return self.shared / section / digest[:32] if self.shared is not None else None

    def share(self, section: str, name: str, out: Path, shared: Path, skip: tuple[str, ...] = ()) -> None:
        """Keep a finished step's folder for other runs, with its wall time and where it ran."""
        copy_dir(out, shared, skip)
        atomic_write_json(shared.with_suffix(".json"), {**self.state.get(section, name), "origin": str(out)})

    def reused(self, section: str, name: str, shared: Path, **values: Any) -> None:
        """Record a step copied from another run: its original wall time and threads, and where from."""
        origin = read_json_object(shared.with_suffix(".json"), REWRITE)
        kept = {k: origin[k] for k in ("wall_s", "threads") if k in origin}
        self.state.set(section, name, status="completed", copied_from=str(shared), **kept, **values)
        say(f"[green]{section[:-1]} {name}: the same step copied from {shared}[/]")

    # -- stages -------------------------------------------------------------------------------------------
    def train(self, stage: StagePlan, model: str, upstream: str) -> tuple[str, str, dict[str, Any]]:
        """Train one stage from ``model`` in a child process; returns (saved model path, chained hash,
        stage.json record)."""
        dataset, fingerprint = self.dataset_path(stage)
        references = self.data_references(stage)
        out = self.run_dir / "stages" / stage.name
        stage_cfg = self.stage_config(stage, model, dataset, self.classifier)
        hashed = {  # the data enter by fingerprint, not by path
            k: v
            for k, v in dataclasses.asdict(stage_cfg).items()
            if k not in ("model", "resume", "force", "output_dir", "dataset", *references)
        }
        chained = {"upstream": upstream, "type": stage.type, "config": hashed, "data": fingerprint}
        if references:
            chained["references"] = {k: fp for k, (_, fp) in references.items()}
        chain = sha256_json(chained)
        previous = self.state.get("stages", stage.name)
        stale = self.force or (previous.get("chain") not in (None, chain))
        record = read_json_object(out / "stage.json", REWRITE) if (out / "stage.json").is_file() else {}
        if not stale and previous.get("status") == "completed" and record.get("status") == "completed":
            if has_weights(previous["model"]):
                say(f"[green]stage {stage.name}: up to date[/]")
                return previous["model"], chain, record
            say(f"[yellow]stage {stage.name}: {previous['model']} has lost its weights; training it again[/]")
            stale = True
        shared = self.shared_step("stages", chain)
        if shared is not None and not self.force and (shared / "stage.json").is_file():
            return self.reuse_stage(stage.name, shared, out, chain)
        if stale:
            stage_cfg.force = True
            stage_cfg.resume = False
        stage_cfg.output_dir = str(out)
        self.state.set("stages", stage.name, chain=chain, status="running")
        config_file = self.write_config(f"stage-{stage.name}", dataclasses.asdict(stage_cfg))
        title = f"stage {stage.name} ({stage.type} from {model})"
        self.step("stages", stage.name, title, "train", stage.type, "--config", config_file)
        record = json.loads((out / "stage.json").read_text(encoding="utf-8"))
        model_dir = record.get("model", {}).get("path") or str(out / "model")
        self.state.set("stages", stage.name, status="completed", model=str(model_dir))
        if shared is not None:
            self.share("stages", stage.name, out, shared, skip=("checkpoints",))
        return str(model_dir), chain, record

    def reuse_stage(self, name: str, shared: Path, out: Path, chain: str) -> tuple[str, str, dict[str, Any]]:
        """A stage another run trained with the same chained hash: its model and record copied here (not its
        checkpoints), the saved model's path moved into this run."""
        copy_dir(shared, out)
        origin = Path(read_json_object(shared.with_suffix(".json"), REWRITE)["origin"])
        record = read_json_object(out / "stage.json", REWRITE)
        saved = Path(record.get("model", {}).get("path") or origin / "model")
        model_dir = out / saved.relative_to(origin) if saved.is_relative_to(origin) else saved
        record.setdefault("model", {})["path"] = str(model_dir)
        atomic_write_json(out / "stage.json", record)
        self.reused("stages", name, shared, chain=chain, model=str(model_dir))
        return str(model_dir), chain, record

    def stage_config(self, stage: StagePlan, model: str, dataset: str, classifier: str | None) -> Any:
        """A stage's config: recipe settings, the pipeline's seed and reward, the model it starts from."""
        config_cls, _ = stage_entry(stage.type)
        values = {"seed": self.cfg.seed, **stage.config, "model": model, "resume": True, "force": False}
        if dataset:
            values["dataset"] = dataset
        values.update({k: path for k, (path, _) in self.data_references(stage).items()})
        names = {f.name for f in dataclasses.fields(config_cls)}
        if "reward" in names:
            reward = stage.config.get("reward", self.cfg.reward)
            if reward is not None:
                values["reward"] = with_classifier(reward, classifier)
        return from_dict(config_cls, values, f"{self.source}:stages.{stage.name}.config")

    # -- the whole run ------------------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can reject the recipe, checked before the run directory is touched: the model,
        every data build (options and source rows), the classifier options, every stage config and
        reward, and the evaluation preset, suites and data files."""
        from alignment.evaluation.runner import plan_evaluation
        from alignment.models import resolve_model
        from data_builders.builders.build import collect
        from reward.registry import check_reward_spec

        cfg = self.cfg
        try:
            resolve_model(cfg.model)
        except SafealignError as exc:
            raise SafealignError(f"{self.source}, key 'model': {exc}") from exc
        for key, spec in cfg.data.items():
            build = self.build_config(key, spec)
            try:
                collect(build)  # reads and validates the source rows; nothing is written
            except SafealignError as exc:
                raise SafealignError(f"{self.source}:data.{key}: {exc}") from exc
        trains_classifier = isinstance(cfg.stereotype_classifier, dict)
        if trains_classifier:
            from reward.stereotype.train import StereotypeTrainConfig

            options = {**cfg.stereotype_classifier, "out": str(self.run_dir / "stereotype_classifier")}
            from_dict(StereotypeTrainConfig, options, f"{self.source}:stereotype_classifier")
        elif cfg.stereotype_classifier is not None and not Path(cfg.stereotype_classifier).is_dir():
            raise SafealignError(
                f"{self.source}, key 'stereotype_classifier': {cfg.stereotype_classifier}: no such directory"
            )
        if cfg.reward is not None:
            check_reward_spec(cfg.reward, f"{self.source}, key 'reward'")
        for stage in cfg.stages:
            self.stage_config(stage, cfg.model, self.dataset_path(stage)[0], None)
        settings = eval_config(cfg, None, cfg.model)
        try:
            if trains_classifier and settings.suites:  # the classifier exists only once the run trains it
                from alignment.evaluation.registry import get_suite

                needs = [s for s in settings.suites if "stereotype_classifier" in get_suite(s).requires]
                settings.suites = [s for s in settings.suites if s not in needs] or None
            plan_evaluation(cfg.model, settings, check_model=False)
        except SafealignError as exc:
            raise SafealignError(f"{self.source}, key 'evaluation': {exc}") from exc

    def lane_threads(self) -> tuple[int, str] | None:
        """The threads the training chain and the evaluation lane share, and why; None when evaluations
        run in turn with the training (the recipe says so, fewer than two threads, too little memory
        available, or not a CPU)."""
        if not self.cfg.overlap_evaluation or not self.cfg.stages or pick_device().type != "cpu":
            return None
        memory = available_memory_gb()
        if memory is not None and memory < self.cfg.overlap_memory_gb:
            say(
                f"[dim]evaluations run in turn with the training: {memory:.1f} GB of memory available, "
                f"{self.cfg.overlap_memory_gb:g} GB wanted to run both at once (overlap_memory_gb)[/]"
            )
            return None
        budget, why = choose_threads(self.threads)
        return (budget, why) if budget >= 2 else None

    def train_and_evaluate(self, base_chain: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Evaluate the base model and the baselines, then train each stage and evaluate it: results and
        stage records by column, in report order.

        On a CPU with two or more threads to give, evaluations queue in a second lane (one at a time, each
        in its own process) while the chain trains, instead of each waiting for the other. Once the chain
        is trained, its last model is evaluated on the training's threads beside the lane if the lane is
        still busy, and whatever the lane starts after that takes every thread. A failed evaluation stops
        the run at the end of the stage training beside it; an interrupted run stops both lanes."""
        cfg = self.cfg
        shared = self.lane_threads()
        lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation") if shared else None
        evaluations: dict[str, Future | dict[str, Any]] = {}
        records: dict[str, dict[str, Any] | None] = {}

        def evaluate(name: str, model: str, chain: str, plan: BaselinePlan | None = None) -> None:
            if lane is None:
                evaluations[name] = self.evaluate(name, model, chain, plan)
            else:
                evaluations[name] = lane.submit(self.evaluate, name, model, chain, plan)
                self.lane_jobs.append(evaluations[name])

        def check_lane() -> None:
            for job in evaluations.values():
                if isinstance(job, Future) and job.done() and job.exception() is not None:
                    raise job.exception()

        self.shared_threads = shared
        try:
            evaluate(BASE, self.base_path, base_chain)
            records[BASE] = None
            for plan in cfg.baselines:
                evaluate(plan.name, self.base_path, base_chain, plan)
                records[plan.name] = None
            model, chain = self.base_path, base_chain
            for stage in cfg.stages:
                model, chain, records[stage.name] = self.train(stage, model, chain)
                check_lane()
                if stage is not cfg.stages[-1]:
                    evaluate(stage.name, model, chain)
                elif any(not job.done() for job in self.lane_jobs):
                    # the chain is trained: its last model is evaluated here, beside the busy lane, on the
                    # threads the training had, rather than queued behind the lane with a core idle
                    evaluations[stage.name] = self.evaluate(stage.name, model, chain)
                    self.shared_threads = None  # what the lane starts from now on takes every thread
                else:
                    self.shared_threads = None  # the lane is idle: the evaluation takes every thread
                    evaluate(stage.name, model, chain)
            results = {k: v.result() if isinstance(v, Future) else v for k, v in evaluations.items()}
        except BaseException:
            if lane is not None:
                stop_children()
                lane.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            self.shared_threads, self.lane_jobs = None, []
        if lane is not None:
            lane.shutdown()
        return results, records

    def run(self) -> dict[str, Any]:
        from alignment.audit import leakage_audit
        from alignment.models import resolve_model
        from alignment.runs import run_context

        cfg = self.cfg
        self.check()
        with run_context(
            cfg.name,
            command=sys.argv,
            config=cfg,
            seed=cfg.seed,
            root=self.run_dir.parent,
            kind="pipeline",  # an existing folder must be a pipeline run (or --force)
            force=self.force,
        ) as run:
            self.state = PipelineState(self.run_dir)
            self.base_path = resolve_model(cfg.model).path
            self.build_data()
            classifier = self.train_classifier()
            base_chain = sha256_json({"model": cfg.model, "path": self.base_path, "classifier": classifier})
            results, records = self.train_and_evaluate(base_chain)
            used = sorted(
                {self.dataset_path(s)[0] for s in cfg.stages if s.dataset}
                | {path for s in cfg.stages for path, _ in self.data_references(s).values()}
            )
            audit = leakage_audit(used, self.run_dir / "eval" / BASE)
            provenance = {
                "model": cfg.model,
                "model_path": self.base_path,
                "datasets": {
                    k: {
                        "fingerprint": v["fingerprint"],
                        "strategy": v["strategy"],
                        "rows": v["rows"],
                        "sources": [
                            f"{s.get('name')} {s.get('sha256', '')[:12]}" for s in v["sources"] or []
                        ],
                    }
                    for k, v in self.datasets.items()
                },
                "leakage_audit": audit,
                "stereotype_classifier": self.classifier_info or None,
                "seed": cfg.seed,
                "split": dataclasses.asdict(cfg.split),
                "versions": run.manifest.get("versions"),
                "git_commit": run.manifest.get("git_commit"),
            }
            report = write_report(self.run_dir, cfg.name, results, records, provenance, cfg.report)
            run.update(
                leakage_audit=audit,
                report=str(self.run_dir / "report.md"),
                stages={s: (r or {}).get("status") for s, r in records.items()},
            )
        print_report(report)
        if not audit["passed"]:
            say(
                f"[red]leakage audit: {audit['overlapping_items']} evaluated items appear in training data[/]"
            )
        return report


def rebuild_report(run_dir: str | Path) -> dict[str, Any]:
    """Re-create the report of a finished (or partly finished) pipeline run from its saved outputs."""
    from alignment.evaluation import load_results
    from alignment.runs import load_manifest

    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    raw_cfg = manifest.get("config") or {}
    if not isinstance(raw_cfg, dict) or "stages" not in raw_cfg:
        raise SafealignError(f"{run_dir}: not a pipeline run (its manifest has no pipeline config)")
    # the manifest records every evaluation setting, including those the pipeline fills in itself
    evaluation = raw_cfg.get("evaluation") or {}
    if isinstance(evaluation, dict):
        evaluation = {k: v for k, v in evaluation.items() if k not in PIPELINE_EVAL_KEYS}
    cfg = parse_pipeline({**raw_cfg, "evaluation": evaluation}, str(run_dir / "manifest.json"))
    results, records = {}, {}
    for name in [BASE, *(b.name for b in cfg.baselines)] + [s.name for s in cfg.stages]:
        eval_dir = run_dir / "eval" / name
        if not (eval_dir / "results.json").is_file():
            continue
        results[name] = load_results(eval_dir)
        stage_file = run_dir / "stages" / name / "stage.json"
        records[name] = read_json_object(stage_file, REWRITE) if stage_file.is_file() else None
    if BASE not in results:
        raise SafealignError(f"{run_dir}: the base model has no evaluation results yet; run the pipeline")
    previous = {}
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        previous = read_json_object(metrics_file, REWRITE).get("provenance", {})
    provenance = {k: v for k, v in previous.items() if k != "scorer_backends"} or {"model": cfg.model}
    return write_report(run_dir, cfg.name, results, records, provenance, cfg.report)
