"""Export one stage of a finished pipeline run as a standalone Hugging Face model folder.

The folder holds merged safetensors weights (a LoRA stage's adapter is merged into its base), the
tokenizer with its chat template, a generation config, ``safealign_export.json`` (where it came from)
and a ``README.md`` model card: YAML front matter (license, base_model, datasets, tags, ``model-index``
with the run's evaluated metrics and their 95% CIs), then the recipe, data provenance, the results table
and the limitations. It loads with plain ``transformers`` (``AutoModelForCausalLM.from_pretrained``).

Everything is checked before anything is written, and the folder appears only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alignment.errors import SafealignError
from alignment.io import read_json_object

# Card facts for the built-in aliases: the hub id of the base weights and their license.
BASE_CARDS = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "smollm2-360m-instruct": ("HuggingFaceTB/SmolLM2-360M-Instruct", "apache-2.0"),
    "qwen2.5-0.5b-instruct": ("Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0"),
    "llama-3.2-1b-instruct": ("meta-llama/Llama-3.2-1B-Instruct", "llama3.2"),
    "tiny-random": (None, "apache-2.0"),
}
# Hub dataset ids of the training sources the builders name (SR-LLM's files are on GitHub only).
DATASET_IDS = {
    "crows_pairs": "nyu-mll/crows_pairs",
    "stereoset": "McGill-NLP/stereoset",
    "rtp": "allenai/real-toxicity-prompts",
    "toxigen": "toxigen/toxigen-data",
    "bold": "AmazonScience/bold",
}
EXPORT_FILE = "safealign_export.json"


def check_export(run_dir: str | Path, stage: str | None, out: str | Path) -> dict[str, Any]:
    """Validate a request before any work: a completed pipeline run, a trained stage, an empty ``out``.

    Returns what the export needs: the run's config, report, the stage's name, model folder and record.
    """
    from alignment.runs import load_manifest

    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise SafealignError(f"{run_dir}: no such run directory")
    manifest = load_manifest(run_dir)
    config = manifest.get("config")
    if not isinstance(config, dict) or "stages" not in config:
        raise SafealignError(f"{run_dir}: not a pipeline run (its manifest has no pipeline config)")
    if manifest.get("status") != "completed":
        raise SafealignError(
            f"{run_dir}: the run is {manifest.get('status', 'unfinished')!r}, not completed; "
            "finish it with `safealign pipeline` first"
        )
    names = [s.get("name") for s in config["stages"] if isinstance(s, dict)]
    if not names:
        raise SafealignError(f"{run_dir}: the run trained no stage, so there is nothing to export")
    name = stage or names[-1]
    if name not in names:
        raise SafealignError(f"--stage {name!r}: unknown stage; the run has {', '.join(names)}")
    model_dir = run_dir / "stages" / name / "model"
    record = read_json_object(run_dir / "stages" / name / "stage.json", "is the run finished?")
    if record.get("status") != "completed" or not model_dir.is_dir():
        raise SafealignError(f"{run_dir}: stage {name!r} has no finished model at {model_dir}")
    report = read_json_object(run_dir / "metrics.json", "is the run finished?")
    if name not in report.get("stages", []):
        raise SafealignError(f"{run_dir / 'metrics.json'}: stage {name!r} was not evaluated")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SafealignError(f"--out {out}: exists and is not empty; choose a new folder")
    return {"config": config, "report": report, "stage": name, "model_dir": model_dir, "record": record}


def load_merged(model_dir: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a stage's saved model at its stored dtype, any adapter merged in."""
    from transformers import AutoModelForCausalLM

    from alignment.models import load_tokenizer, resolve_model
    from alignment.models.loader import from_pretrained

    source = resolve_model(str(model_dir))
    if source.kind == "adapter":
        from peft import PeftModel

        base = from_pretrained(AutoModelForCausalLM, source.base, dtype="auto")
        model = PeftModel.from_pretrained(base, source.path).merge_and_unload()
    else:
        model = from_pretrained(AutoModelForCausalLM, source, dtype="auto")
    return model.eval(), load_tokenizer(source)


def model_index(report: dict[str, Any], stage: str, model_name: str) -> list[dict[str, Any]]:
    """The ``model-index`` entry: one result per evaluated suite, its metrics with value, CI and n."""
    by_suite: dict[str, list[dict[str, Any]]] = {}
    split = (report.get("split") or {}).get("mode", "heldout")
    for row in report.get("rows", []):
        cell = row.get("cells", {}).get(stage)
        if not cell or cell.get("value") is None:
            continue
        ci = cell.get("ci95")
        interval = f", 95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        by_suite.setdefault(row["suite"], []).append(
            {
                "type": row["metric"],
                "value": cell["value"],
                "name": f"{row['metric']} ({row['kind']}; goal {row['goal']}{interval}; n={cell.get('n')})",
            }
        )
    results = [
        {
            "task": {"type": "text-generation", "name": f"{suite} ({split} items)"},
            "dataset": {"type": suite, "name": suite, "split": split},
            "metrics": metrics,
        }
        for suite, metrics in by_suite.items()
    ]
    return [{"name": model_name, "results": results}]


def front_matter(info: dict[str, Any], model_name: str) -> dict[str, Any]:
    """The card's YAML header: license, base_model, datasets, tags and model-index."""
    config, report, stage = info["config"], info["report"], info["stage"]
    hub_id, license_ = BASE_CARDS.get(config.get("model", ""), (None, "other"))
    if hub_id is None and "/" in str(config.get("model", "")) and not Path(config["model"]).exists():
        hub_id = config["model"]  # a hub id given directly
    trained = _stages_up_to(config, stage)
    sources = sorted(
        {
            str(s).split()[0]
            for key, data in (report.get("provenance", {}).get("datasets") or {}).items()
            if key in {t.get("dataset") for t in trained}
            for s in data.get("sources") or []
        }
    )
    header: dict[str, Any] = {"license": license_}
    if hub_id:
        header["base_model"] = hub_id
    header["datasets"] = [DATASET_IDS.get(s, s) for s in sources]
    header["language"] = ["en"]
    header["library_name"] = "transformers"
    header["pipeline_tag"] = "text-generation"
    header["tags"] = ["safealign", "debiasing", "detoxification", *sorted({t["type"] for t in trained})]
    header["model-index"] = model_index(report, stage, model_name)
    return header


def _stages_up_to(config: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    stages = [s for s in config["stages"] if isinstance(s, dict)]
    names = [s.get("name") for s in stages]
    return stages[: names.index(stage) + 1]


def _results_table(report: dict[str, Any], stage: str) -> str:
    base = report.get("base", "base")
    lines = [f"| metric | goal | {base} | {stage} | change |", "|---|---|---|---|---|"]
    for row in report.get("rows", []):
        cells = row.get("cells", {})
        if stage not in cells:
            continue

        def show(cell: dict[str, Any] | None) -> str:
            if not cell or cell.get("value") is None:
                return "n/a"
            ci = cell.get("ci95")
            return f"{cell['value']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

        change = row.get("deltas", {}).get(stage)
        delta = "" if not change else f"{change['value']:+.4g}" + ("*" if change.get("significant") else "")
        lines.append(
            f"| {row['suite']}/{row['metric']} | {row['goal']} | {show(cells.get(base))} | "
            f"{show(cells.get(stage))} | {delta} |"
        )
    return "\n".join(lines)


LIMITATIONS = """\
- **Held-out evaluation only.** Every number above comes from the held-out groups of the same datasets
  the training data was built from (`split: {split}`, test fraction {fraction}), chosen by the same
  group hash as the builders, and from benchmarks no stage trained on. It says how the model behaves on
  items like those, not on other domains, languages or prompt styles. Preset `{preset}`: {preset_note}
- **CrowS-Pairs.** Its data statement describes crowd-written sentence pairs about US-centric stereotypes
  in nine categories; later audits (Blodgett et al. 2021, *Stereotyping Norwegian Salmon*) found many
  pairs that do not contrast a stereotype with an anti-stereotype, or change more than the group.
  `pct_stereotype` near 50 is not evidence of an unbiased model, and a model that stops modelling
  language also drifts to 50: read it next to the retention rows.
- **Classifier-scored metrics.** Toxicity and stereotype rates come from automatic classifiers (backends
  in `safealign_export.json`), with their own errors and biases.
- **Data.** SR-LLM's sample files come from a repository without a license file; check its terms before
  redistributing this model. The base model's license and limitations apply.
- **Scope.** English only; a small instruction model. It can still produce biased, toxic or false text.
"""


def reproduce_command(config: dict[str, Any], report: dict[str, Any]) -> str:
    """The ``safealign eval`` line that scores the exported folder as the run scored the stage: every
    evaluation setting of the run (the recipe's, and those the pipeline fills in: seed, split rule, base
    model, classifier) that differs from ``safealign eval``'s default, plus the preset and seed."""
    import dataclasses

    from alignment.evaluation.config import EvalConfig

    split = config.get("split") or {}
    classifier = (report.get("provenance", {}).get("stereotype_classifier") or {}).get("path")
    values = {k: v for k, v in (config.get("evaluation") or {}).items() if v is not None}
    values |= {
        "preset": values.get("preset", report.get("preset")),
        "seed": config.get("seed", 0),
        "test_fraction": split.get("test_fraction"),
        "val_fraction": split.get("val_fraction"),
        "split_seed": split.get("seed"),
        "base_model": config.get("model"),
        "stereotype_classifier": values.get("stereotype_classifier") or classifier,
    }
    defaults = EvalConfig()
    flags = []
    for f in dataclasses.fields(EvalConfig):
        value = values.get(f.name)
        if value is None or (value == getattr(defaults, f.name) and f.name not in ("preset", "seed")):
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        flags.append(f"--{f.name.replace('_', '-')} {text}")
    return "safealign eval --model PATH " + " ".join(flags)


def model_card(info: dict[str, Any], model_name: str) -> str:
    """README.md: YAML front matter, then what the model is, how it was made and how it measured."""
    config, report, stage = info["config"], info["report"], info["stage"]
    header = yaml.safe_dump(front_matter(info, model_name), sort_keys=False, allow_unicode=True)
    trained = _stages_up_to(config, stage)
    recipe = {k: v for k, v in config.items() if k != "stages"} | {"stages": trained}
    provenance = report.get("provenance", {})
    datasets = {
        key: value
        for key, value in (provenance.get("datasets") or {}).items()
        if key in {t.get("dataset") for t in trained}
    }
    audit = provenance.get("leakage_audit") or {}
    split = report.get("split") or {}
    preset = report.get("preset", "")
    preset_note = (
        "a smoke-sized sample, so intervals are wide." if preset == "quick" else "see the n of each row."
    )
    chain = " → ".join(f"{t['name']} ({t['type']})" for t in trained)
    evaluate = reproduce_command(config, report)
    parts = [
        f"---\n{header}---\n",
        f"# {model_name}\n",
        f"`{config.get('model')}` after the safealign stages {chain}, exported from the pipeline run "
        f"`{report.get('name', '')}` (stage `{stage}`). safealign trains models to be less socially "
        "biased and less toxic while keeping what they know, and measures both on held-out items.\n",
        "## Use\n",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("PATH")\n'
        'tokenizer = AutoTokenizer.from_pretrained("PATH")\n'
        'messages = [{"role": "user", "content": "Rewrite this text without bias:\\n\\n..."}]\n'
        "inputs = tokenizer.apply_chat_template(\n"
        '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n)\n'
        "output = model.generate(**inputs, max_new_tokens=96)\n"
        'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))\n```\n',
        f"## Results\n\nPreset `{preset}`, seed {report.get('seed')}, held-out items; value [95% bootstrap "
        "CI], change from the base model (* when its interval excludes zero). The same numbers come from\n\n"
        f"```bash\n{evaluate}\n```\n",
        _results_table(report, stage) + "\n",
        "## Recipe\n\n```yaml\n" + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True) + "```\n",
        "## Data provenance\n\n```yaml\n"
        + yaml.safe_dump(
            {
                "datasets": datasets,
                "split": split,
                "leakage_audit": {k: audit.get(k) for k in ("method", "overlapping_items", "passed")},
                "stereotype_classifier": provenance.get("stereotype_classifier"),
                "git_commit": provenance.get("git_commit"),
            },
            sort_keys=False,
            allow_unicode=True,
        )
        + "```\n",
        "## Limitations\n\n"
        + LIMITATIONS.format(
            split=split.get("mode", "heldout"),
            fraction=split.get("test_fraction", 0.2),
            preset=preset,
            preset_note=preset_note,
        ),
    ]
    return "\n".join(parts)


def _saved_as(record: dict[str, Any]) -> str | None:
    """How the stage saved its model (``full``, ``adapter``, ``merged``), from ``stage.json``."""
    model = record.get("model")
    return model.get("saved_as") if isinstance(model, dict) else None


def export_stage(run_dir: str | Path, out: str | Path, stage: str | None = None) -> Path:
    """Write stage ``stage`` (default: the last) of the pipeline run ``run_dir`` into ``out``."""
    from alignment.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_file

    info = check_export(run_dir, stage, out)
    model, tokenizer = load_merged(info["model_dir"])
    if not getattr(tokenizer, "chat_template", None):
        raise SafealignError(f"{info['model_dir']}: the tokenizer has no chat template to export")
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        generation.eos_token_id = tokenizer.eos_token_id
    model_name = f"{info['report'].get('name', Path(run_dir).name)}-{info['stage']}"
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        atomic_write_text(tmp / "README.md", model_card(info, model_name))
        atomic_write_json(
            tmp / EXPORT_FILE,
            {
                "run_dir": str(Path(run_dir).resolve()),
                "stage": info["stage"],
                "source_model": str(info["model_dir"]),
                "saved_as": _saved_as(info["record"]),
                "weights_sha256": {
                    f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors")) if f.is_file()
                },
                "scorer_backends": info["report"].get("provenance", {}).get("scorer_backends"),
            },
        )
    return out
