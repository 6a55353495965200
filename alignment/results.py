"""``safealign results``: an ablation of pipeline recipes, each run as a pipeline, summarised in one table,
one JSON record and one bias-vs-retention plot.

An ablation file (``recipes/<model>/ablation.yaml``)::

    name: smollm2-ablation          # run directories: $SAFEALIGN_RUNS/<name>-<recipe>
    pipeline: pipeline.yaml         # the recipe every entry edits (relative to this file)
    split: validation               # evaluate on validation (choosing a recipe) or heldout (the report)
    out: ../../docs/results         # writes results.md, results.json and results.png (relative to this file)
    baselines: false                # the pipeline's training-free baselines too (each evaluated once)
    recipes:
      - {name: sft-only, stages: [sft]}
      - {name: dpo-neutral, stages: [dpo], data: {pairs: {strategy: neutral_over_more}},
         config: {dpo: {loss_type: sigmoid}}}
      - {name: full}
      - {name: full-seeds, seeds: [0, 1, 2]}   # three runs, every stage trained with each seed

Each entry keeps the pipeline's stages it lists (default: all, in the pipeline's order), merges ``data``
into the pipeline's dataset options and ``config`` into its stages' configs; ``seeds`` runs it once per
training seed (evaluated alike: same items, same evaluation seed) and reports each change's mean and sd
over the seeds. Every run is a normal pipeline run, so a rerun skips what is done. The stereotype
classifier is trained once for the whole ablation, so the base model's evaluation has the same chained
hash in every run; any step (evaluation or stage) whose chained hash another run already finished is
copied from ``shared/`` instead of redone, e.g. the base evaluation, the SFT stage and its evaluation
that an SFT-only recipe and the full chain have in common, or a seeded recipe's run at the pipeline's
own seed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.config import from_dict, load_yaml
from alignment.errors import SafealignError
from alignment.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from alignment.pipeline import BASE, DATA_REFERENCES, Pipeline, PipelineState, parse_pipeline, say

RESULTS_SCHEMA = "safealign.results"


@dataclass
class RecipeEntry:
    """One recipe of the ablation: an edit of the base pipeline recipe."""

    name: str = field(metadata={"help": "recipe name (suffix of its run directory, row of the table)"})
    stages: list[str] | None = field(
        default=None, metadata={"help": "the pipeline's stages to keep, in its order (default: all)"}
    )
    data: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per dataset key: build options merged into the pipeline's"}
    )
    config: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per stage name: config keys merged into the pipeline's"}
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "training seeds: one run per seed (<recipe>-s<seed>), every stage trained with it and "
            "evaluated like the others (same items, same evaluation seed); the table gives each change's "
            "mean and sd over the seeds"
        },
    )

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"recipe name {self.name!r} must be alphanumeric (with - or _)")
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
                raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
            seeded = sorted(name for name, edits in self.config.items() if "seed" in edits)
            if seeded:
                raise ValueError(f"give seeds or a stage's seed, not both (config of {', '.join(seeded)})")

    def runs(self) -> list[tuple[str, int | None]]:
        """(run-name suffix, training seed) of each run of this recipe.

        >>> RecipeEntry(name="chain", seeds=[0, 2]).runs(), RecipeEntry(name="sft").runs()
        ([('chain-s0', 0), ('chain-s2', 2)], [('sft', None)])
        """
        if self.seeds is None:
            return [(self.name, None)]
        return [(f"{self.name}-s{seed}", seed) for seed in self.seeds]


@dataclass
class AblationConfig:
    """An ablation: the base pipeline recipe, the split to evaluate on, the recipes and where to write."""

    name: str = field(metadata={"help": "prefix of the run directories: <name>-<recipe>"})
    pipeline: str = field(metadata={"help": "the pipeline recipe every entry edits (relative to this file)"})
    recipes: list[dict[str, Any]] = field(metadata={"help": "the recipes: name, stages, data, config"})
    split: str = field(
        default="validation",
        metadata={"help": "validation (choosing a recipe) or heldout (the test split, for the final report)"},
    )
    out: str = field(
        default="results",
        metadata={"help": "output prefix: <out>.md, <out>.json, <out>.png (relative to this file)"},
    )
    baselines: bool = field(
        default=False,
        metadata={
            "help": "also evaluate the pipeline's training-free baselines (once, shared by every recipe); "
            "off by default: they are not recipes, and the prompted baseline costs about a full evaluation"
        },
    )

    def __post_init__(self) -> None:
        if self.split not in ("validation", "heldout"):
            raise ValueError(f"split must be validation or heldout, got {self.split!r}")


def load_ablation(
    path: str | Path, split: str | None = None, out: str | None = None
) -> tuple[AblationConfig, list[RecipeEntry]]:
    """Read and check an ablation file; ``pipeline`` and ``out`` become paths relative to it (an ``out``
    given here is relative to the working directory)."""
    path = Path(path)
    raw = load_yaml(path)
    if split is not None:
        raw["split"] = split
    cfg = from_dict(AblationConfig, raw, str(path))
    cfg.pipeline = str((path.parent / cfg.pipeline).resolve())
    cfg.out = str(Path(out).resolve() if out else (path.parent / cfg.out).resolve())
    entries = []
    for i, item in enumerate(cfg.recipes):
        if not isinstance(item, dict):
            raise SafealignError(f"{path}:recipes[{i}]: expected a mapping with name, stages, data, config")
        entries.append(from_dict(RecipeEntry, item, f"{path}:recipes[{i}]"))
    names = [e.name for e in entries]
    if not entries or len(set(names)) != len(names):
        raise SafealignError(f"{path}, key 'recipes': give at least one recipe, with distinct names")
    return cfg, entries


def recipe_mapping(
    base: dict[str, Any], entry: RecipeEntry, run_name: str, where: str, seed: int | None = None
) -> dict[str, Any]:
    """The pipeline recipe of one entry: the base recipe with its stages kept and its edits merged, every
    stage trained with ``seed`` when given."""
    raw = copy.deepcopy(base)
    raw["name"] = run_name
    stages = raw.get("stages") or []
    known = [s.get("name") for s in stages]
    wanted = entry.stages if entry.stages is not None else known
    unknown = sorted(set(wanted) - set(known)) + sorted(set(entry.config) - set(known))
    if unknown:
        raise SafealignError(f"{where}: unknown stage(s) {', '.join(unknown)}; the pipeline has {known}")
    raw["stages"] = [s for s in stages if s.get("name") in wanted]
    for stage in raw["stages"]:
        stage["config"] = {**(stage.get("config") or {}), **entry.config.get(stage["name"], {})}
        if seed is not None:
            stage["config"]["seed"] = seed
    data = raw.get("data") or {}
    for key, options in entry.data.items():
        if key not in data:
            raise SafealignError(f"{where}: data key {key!r} is not in the pipeline ({', '.join(data)})")
        data[key] = {**data[key], **options}
    used = {s.get("dataset") for s in raw["stages"]}
    used |= {s["config"].get(key) for s in raw["stages"] for key in DATA_REFERENCES}
    raw["data"] = {k: v for k, v in data.items() if k in used}
    return raw


class Ablation:
    """Runs every recipe of an ablation as a pipeline and writes the summary (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        root: str | Path | None = None,
        *,
        model: str | None = None,
        out: str | None = None,
        limit: int | None = None,
        only: list[str] | None = None,
        **pipeline_args: Any,
    ) -> None:
        from alignment.paths import runs_dir

        self.source = str(path)
        self.cfg, self.entries = load_ablation(path, split, out)
        self.only = only  # a subset of the recipes, in the file's order (None: all)
        if only is not None:
            known = [e.name for e in self.entries]
            unknown = sorted(set(only) - set(known))
            if unknown or not only:
                raise SafealignError(
                    f"--recipes: unknown recipe(s) {', '.join(unknown) or '(none given)'}; "
                    f"{self.source} has {', '.join(known)}"
                )
            self.entries = [e for e in self.entries if e.name in only]
        self.root = Path(root or runs_dir())
        self.base_raw = load_yaml(self.cfg.pipeline)
        if model is not None:  # every recipe on another base model (e.g. tiny-random for a smoke run)
            self.base_raw["model"] = model
        if limit is not None:  # every suite capped (a smoke run)
            self.base_raw["evaluation"] = {**(self.base_raw.get("evaluation") or {}), "limit": limit}
        self.pipeline_args = pipeline_args  # force, threads

    def pipelines(self) -> list[tuple[RecipeEntry, Pipeline]]:
        """One checked pipeline per run of each recipe (all are validated before any runs)."""
        out = []
        for i, entry in enumerate(self.entries):
            where = f"{self.source}:recipes[{i}]"
            for suffix, seed in entry.runs():
                raw = recipe_mapping(self.base_raw, entry, f"{self.cfg.name}-{suffix}", where, seed)
                raw.setdefault("evaluation", {})["split"] = self.cfg.split
                if not self.cfg.baselines:
                    raw.pop("baselines", None)
                if isinstance(raw.get("stereotype_classifier"), dict):
                    raw["stereotype_classifier"] = str(self.classifier_dir)
                cfg = parse_pipeline(raw, where)
                out.append((entry, Pipeline(cfg, root=self.root, source=where, **self.pipeline_args)))
        return out

    @property
    def classifier_dir(self) -> Path:
        return self.root / self.cfg.name / "stereotype_classifier"

    def train_classifier(self) -> None:
        """Train the base recipe's stereotype classifier once, into ``<runs>/<name>/``, if it has one."""
        spec = self.base_raw.get("stereotype_classifier")
        if not isinstance(spec, dict):
            return
        raw = {**self.base_raw, "name": self.cfg.name, "stages": [], "data": {}}
        shared = Pipeline(parse_pipeline(raw, self.source), root=self.root, **self.pipeline_args)
        shared.state = PipelineState(shared.run_dir)
        shared.train_classifier()

    def run(self) -> dict[str, Any]:
        """Run (or resume) every recipe, then write ``<out>.md``, ``<out>.json`` and ``<out>.png``."""
        self.train_classifier()
        planned = self.pipelines()
        for pipeline in (p for _, p in planned):
            pipeline.check()
        shared = self.root / self.cfg.name / "shared"
        runs: dict[str, list[dict[str, Any]]] = {}
        for entry, pipeline in planned:
            say(f"[bold]recipe {pipeline.cfg.name}[/]: {' -> '.join(s.name for s in pipeline.cfg.stages)}")
            pipeline.shared = shared
            pipeline.run()
            runs.setdefault(entry.name, []).append(recipe_record(entry, pipeline.run_dir))
        records = [
            seeded_record(e, runs[e.name]) if e.seeds is not None else runs[e.name][0] for e in self.entries
        ]
        summary = {
            "schema": RESULTS_SCHEMA,
            "schema_version": 1,
            "ablation": self.source,
            "pipeline": self.cfg.pipeline,
            "split": self.cfg.split,
            "only": [e.name for e in self.entries] if self.only is not None else None,
            "recipes": records,
        }
        write_results(summary, Path(self.cfg.out))
        return summary


def recipe_record(entry: RecipeEntry, run_dir: Path) -> dict[str, Any]:
    """One recipe's line of the record: its last stage's change on every headline metric, with the paired
    CI and p-values from the run's ``metrics.json``, its wall times and its settings."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    steps = json.loads((run_dir / "pipeline.json").read_text(encoding="utf-8"))
    final = metrics["stages"][-1]
    rows = []
    for row in metrics["rows"]:
        d = row.get("deltas", {}).get(final)
        rows.append(
            {
                "suite": row["suite"],
                "metric": row["metric"],
                "kind": row["kind"],
                "goal": row["goal"],
                "capability_check": row.get("capability_check", False),
                "base": (row["cells"].get(BASE) or {}).get("value"),
                "value": (row["cells"].get(final) or {}).get("value"),
                "delta": d,
            }
        )
    own = [s for name, s in steps.get("stages", {}).items()] + [
        s for name, s in steps.get("evals", {}).items() if name != BASE
    ]
    return {
        "name": entry.name,
        "run_dir": str(run_dir),
        "stages": metrics["stages"][1:],
        "final_stage": final,
        "recipe": dataclasses.asdict(entry),
        "wall_time_s": round(sum(s.get("wall_s", 0.0) for s in own), 1),
        "base_eval_wall_s": steps.get("evals", {}).get(BASE, {}).get("wall_s"),
        "preset": metrics.get("preset"),
        "seed": metrics.get("seed"),
        "verdict": metrics.get("verdicts", {}).get(final),
        "rows": rows,
    }


def seeded_record(entry: RecipeEntry, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One line for a recipe run with several training seeds: every headline change as its mean, sample
    sd and per-seed values over the runs (``significant_seeds``: how many were significant), the wall
    times summed and each run's record under ``runs``."""
    by_run = [{(x["suite"], x["metric"]): x for x in r["rows"]} for r in runs]
    rows = []
    for row in runs[0]["rows"]:
        key = (row["suite"], row["metric"])
        deltas = [rows_of.get(key, {}).get("delta") for rows_of in by_run]
        values = [rows_of.get(key, {}).get("value") for rows_of in by_run]
        changes = [d["value"] for d in deltas if d and d.get("value") is not None]
        delta = None
        if len(changes) == len(runs):
            delta = {
                "value": statistics.fmean(changes),
                "sd": statistics.stdev(changes) if len(changes) > 1 else 0.0,
                "per_seed": changes,
                "significant_seeds": sum(bool(d.get("significant")) for d in deltas),
                "seeds": len(runs),
            }
        known = [v for v in values if v is not None]
        rows.append({**row, "value": statistics.fmean(known) if known else None, "delta": delta})
    return {
        **{k: runs[0][k] for k in ("name", "stages", "final_stage", "recipe", "preset", "base_eval_wall_s")},
        "seeds": entry.seeds,
        "wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
        "rows": rows,
        "runs": [{**r, "training_seed": seed} for r, seed in zip(runs, entry.seeds or [], strict=True)],
    }


def tradeoff(record: dict[str, Any]) -> tuple[float, float] | None:
    """(bias index, retention change) of a recipe's final stage.

    Bias index: the mean over bias metrics of the final stage's distance to the ideal divided by the
    base's (1.0 = as biased as the base; metrics with a direction instead of an ideal use the signed
    change relative to the base value). Retention change: the mean change, in points, of the capability
    metrics, signed so that positive is better.
    """
    ratios, retention = [], []
    for row in record["rows"]:
        base, value, d = row["base"], row["value"], row["delta"]
        if base is None or value is None or d is None:
            continue
        if row["kind"] == "bias":
            if isinstance(row["goal"], (int, float)) and abs(base - row["goal"]) > 0:
                ratios.append(abs(value - row["goal"]) / abs(base - row["goal"]))
            elif row["goal"] in ("lower", "higher") and base != 0:
                sign = 1.0 if row["goal"] == "lower" else -1.0
                ratios.append(1.0 + sign * (value - base) / abs(base))
        elif row["capability_check"]:
            retention.append(d["value"] if row["goal"] != "lower" else -d["value"])
    if not ratios or not retention:
        return None
    return sum(ratios) / len(ratios), sum(retention) / len(retention)


def _cell(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "n/a"
    if "sd" in d:
        starred = f" ({d['significant_seeds']}/{d['seeds']}*)" if d["significant_seeds"] else ""
        return f"{d['value']:+.2f} ± {d['sd']:.2f}{starred}"
    text = f"{d['value']:+.2f}"
    if d.get("ci95"):
        text += f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
    return text + ("*" if d.get("significant") else "")


def _seeds(record: dict[str, Any]) -> str:
    return ", ".join(str(s) for s in record.get("seeds") or [record.get("seed")])


def markdown(summary: dict[str, Any], plot_name: str | None) -> str:
    """``results.md``: one column per recipe, one row per headline metric (change from base, paired CI)."""
    records = summary["recipes"]
    split = "validation split (for choosing a recipe)" if summary["split"] == "validation" else "test split"
    command = f"safealign results --config {Path(summary['ablation']).as_posix()}"
    if summary.get("only"):
        command += f" --recipes {','.join(summary['only'])}"
    lines = [
        "# Ablation results",
        "",
        f"Generated by `{command}` on the {split}: "
        "each recipe is a pipeline run of the same base recipe; a cell is the final stage's change from "
        "the base model with its paired 95% CI, `*` when significant (Holm-adjusted across a stage's bias "
        "measures). A recipe with several training seeds gives the mean ± sd of the change over its "
        "seeds, and (k/n*) when k of its n seeds were significant. Wall time counts the recipe's own "
        "training and evaluation steps (a step shared with an earlier recipe at its original time); the "
        "base evaluation is shared.",
        "",
        "| | " + " | ".join(r["name"] for r in records) + " |",
        "|---|" + "---|" * len(records),
        "| stages | " + " | ".join(" → ".join(r["stages"]) for r in records) + " |",
        "| training seeds | " + " | ".join(_seeds(r) for r in records) + " |",
        "| wall time | " + " | ".join(f"{r['wall_time_s'] / 60:.1f} min" for r in records) + " |",
    ]
    deltas = [{(x["suite"], x["metric"]): x["delta"] for x in r["rows"]} for r in records]
    for row in records[0]["rows"] if records else []:
        base = "" if row["base"] is None else f" (base {row['base']:.4g})"
        cells = [_cell(d.get((row["suite"], row["metric"]))) for d in deltas]
        lines.append(f"| {row['suite']}/{row['metric']}{base} | " + " | ".join(cells) + " |")
    if plot_name:
        lines += ["", f"![bias vs retention]({plot_name})", ""]
        lines.append(
            "Bias index: the mean over bias metrics of the distance to the ideal relative to the base (lower "
            "is better); retention: the mean change of the capability metrics in points (higher is better)."
        )
    return "\n".join(lines) + "\n"


def scatter(summary: dict[str, Any]) -> bytes | None:
    """A PNG of every recipe's (bias index, retention change), or None when no recipe has both."""
    from alignment.report.plots import new_figure, to_png

    points = {r["name"]: tradeoff(r) for r in summary["recipes"]}
    points = {k: v for k, v in points.items() if v is not None}
    if not points:
        return None
    fig, axes = new_figure()
    ax = axes[0][0]
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=60)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
    ax.axvline(1.0, color="#999999", linestyle=":", linewidth=1)
    ax.axhline(0.0, color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("bias index relative to base (lower is better)")
    ax.set_ylabel("retention change (points, higher is better)")
    ax.set_title(f"Recipes: bias vs retention ({summary['split']} split)")
    return to_png(fig)


def write_results(summary: dict[str, Any], out: Path) -> None:
    """``<out>.json``, ``<out>.png`` (when there is something to plot) and ``<out>.md``, atomically."""
    png = scatter(summary)
    if png is not None:
        atomic_write_bytes(out.with_suffix(".png"), png)
    atomic_write_json(out.with_suffix(".json"), summary)
    atomic_write_text(
        out.with_suffix(".md"), markdown(summary, out.with_suffix(".png").name if png else None)
    )
