"""``safealign results``: an ablation of pipeline recipes on tiny-random, and its pieces."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from alignment.errors import SafealignError
from alignment.results import RecipeEntry, load_ablation, markdown, recipe_mapping, seeded_record, tradeoff

STAGE = {"per_device_train_batch_size": 4, "max_length": 512, "save_steps": 2, "logging_steps": 1}
BASE_RECIPE = {
    "name": "unused",
    "model": "tiny-random",
    "seed": 0,
    "split": {"test_fraction": 0.2, "val_fraction": 0.2, "seed": 0},
    "data": {
        "rewrites": {"kind": "sft", "source": "rewrite_pairs", "limit": 32},
        "pairs": {"kind": "preference", "source": "crows_pairs", "strategy": "parity", "limit": 48},
    },
    "stages": [
        {"name": "sft", "type": "sft", "dataset": "rewrites", "config": {**STAGE, "max_steps": 2}},
        {
            "name": "dpo",
            "type": "dpo",
            "dataset": "pairs",
            "config": {**STAGE, "max_steps": 2, "loss_type": "parity"},
        },
    ],
    "evaluation": {"preset": "quick", "limit": 6, "suites": ["crows_pairs", "hellaswag"]},
}
RECIPES = [
    {"name": "sft-only", "stages": ["sft"]},
    {
        "name": "dpo-neutral",
        "stages": ["dpo"],
        "data": {"pairs": {"strategy": "neutral_over_more"}},
        "config": {"dpo": {"loss_type": "sigmoid"}},
    },
]


def ablation_file(tmp_path: Path, recipes: list[dict] = RECIPES) -> Path:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(BASE_RECIPE))
    path = tmp_path / "ablation.yaml"
    ablation = {"name": "abl", "pipeline": "pipeline.yaml", "out": "docs/results", "recipes": recipes}
    path.write_text(yaml.safe_dump(ablation))
    return path


def test_a_recipe_keeps_its_stages_and_merges_its_edits():
    entry = RecipeEntry(**RECIPES[1])
    raw = recipe_mapping(BASE_RECIPE, entry, "abl-dpo-neutral", "here")
    assert raw["name"] == "abl-dpo-neutral" and [s["name"] for s in raw["stages"]] == ["dpo"]
    assert raw["stages"][0]["config"] == {**STAGE, "max_steps": 2, "loss_type": "sigmoid"}
    assert raw["data"] == {"pairs": {**BASE_RECIPE["data"]["pairs"], "strategy": "neutral_over_more"}}
    assert BASE_RECIPE["data"]["pairs"]["strategy"] == "parity"  # the base recipe is not modified
    whole = recipe_mapping(BASE_RECIPE, RecipeEntry(name="all"), "abl-all", "here")
    assert [s["name"] for s in whole["stages"]] == ["sft", "dpo"] and set(whole["data"]) == {
        "rewrites",
        "pairs",
    }


def test_a_recipe_keeps_the_data_a_stage_config_names():
    base = copy.deepcopy(BASE_RECIPE)
    base["data"]["anchor"] = {"kind": "prompts", "source": "bold"}
    base["stages"][1]["config"]["ptx_dataset"] = "anchor"  # a data key named in a config, not as `dataset`
    assert set(recipe_mapping(base, RecipeEntry(name="dpo", stages=["dpo"]), "x", "here")["data"]) == {
        "pairs",
        "anchor",
    }
    assert set(recipe_mapping(base, RecipeEntry(name="sft", stages=["sft"]), "x", "here")["data"]) == {
        "rewrites"
    }


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("recipes/*/ablation.yaml")), ids=str)
def test_every_shipped_ablation_plans_its_runs(path, tmp_path):
    from alignment.results import Ablation

    planned = Ablation(path, root=tmp_path).pipelines()
    assert len({p.cfg.name for _, p in planned}) == len(planned) >= 1


def test_baselines_are_left_out_of_an_ablation_unless_it_asks(tmp_path, monkeypatch):
    from alignment.results import Ablation

    monkeypatch.setitem(BASE_RECIPE, "baselines", ["prompted"])
    path = ablation_file(tmp_path)
    assert all(not p.cfg.baselines for _, p in Ablation(path).pipelines())
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "baselines": True}))
    assert all([b.name for b in p.cfg.baselines] == ["prompted"] for _, p in Ablation(path).pipelines())


def test_a_subset_of_recipes_runs_and_says_so(tmp_path):
    from alignment.results import Ablation, markdown

    path = ablation_file(tmp_path)
    assert [e.name for e in Ablation(path, only=["dpo-neutral"]).entries] == ["dpo-neutral"]
    with pytest.raises(SafealignError, match="unknown recipe.*dpo-parity.*has sft-only, dpo-neutral"):
        Ablation(path, only=["dpo-parity"])
    summary = {"ablation": "a.yaml", "split": "validation", "only": ["dpo-neutral"], "recipes": []}
    assert "`safealign results --config a.yaml --recipes dpo-neutral`" in markdown(summary, None)
    assert "--recipes" not in markdown({**summary, "only": None}, None)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "stages": ["ppo"]}, r"here: unknown stage\(s\) ppo"),
        ({"name": "x", "config": {"ppo": {"beta": 1}}}, r"here: unknown stage\(s\) ppo"),
        ({"name": "x", "data": {"prompts": {"limit": 3}}}, "here: data key 'prompts' is not in the pipeline"),
    ],
)
def test_a_recipe_naming_what_the_pipeline_lacks_is_refused(entry, message):
    with pytest.raises(SafealignError, match=message):
        recipe_mapping(BASE_RECIPE, RecipeEntry(**entry), "abl-x", "here")


def test_ablation_files_are_checked(tmp_path):
    cfg, entries = load_ablation(ablation_file(tmp_path), split="heldout")
    assert cfg.split == "heldout" and [e.name for e in entries] == ["sft-only", "dpo-neutral"]
    assert cfg.out == str((tmp_path / "docs" / "results").resolve())
    with pytest.raises(SafealignError, match="distinct names"):
        load_ablation(ablation_file(tmp_path, RECIPES + [RECIPES[0]]))
    with pytest.raises(SafealignError, match="split must be validation or heldout"):
        load_ablation(ablation_file(tmp_path), split="train")


def test_a_seeded_recipe_runs_once_per_training_seed(tmp_path):
    from alignment.results import Ablation

    path = ablation_file(tmp_path, [{"name": "full"}, {"name": "chain", "seeds": [0, 3]}])
    planned = Ablation(path).pipelines()
    assert [p.cfg.name for _, p in planned] == ["abl-full", "abl-chain-s0", "abl-chain-s3"]
    full, s0, s3 = (p.cfg.stages for _, p in planned)
    assert [st.config["seed"] for st in s3] == [3, 3] and all("seed" not in st.config for st in full)
    # seed 0 is the pipeline's own seed: the same training as the unseeded recipe, so its steps are shared
    assert [st.config for st in s0] == [{**st.config, "seed": 0} for st in full]
    for seeds, message in [([], "distinct non-negative"), ([1, 1], "distinct"), ([-1], "non-negative")]:
        with pytest.raises(SafealignError, match=message):
            load_ablation(ablation_file(tmp_path, [{"name": "x", "seeds": seeds}]))
    both = {"name": "x", "seeds": [1], "config": {"dpo": {"seed": 2}}}
    with pytest.raises(SafealignError, match="seeds or a stage's seed, not both.*dpo"):
        load_ablation(ablation_file(tmp_path, [both]))


def test_a_seeded_recipe_reports_the_mean_and_sd_of_each_change():
    def run(change, significant, wall):
        delta = {"value": change, "ci95": [change - 2, change + 2], "significant": significant}
        row = {"suite": "crows_pairs", "metric": "pct_stereotype", "kind": "bias", "goal": 50.0, "base": 60.0}
        return {
            "name": "chain",
            "stages": ["dpo"],
            "final_stage": "dpo",
            "recipe": {},
            "preset": "quick",
            "base_eval_wall_s": 5.0,
            "wall_time_s": wall,
            "rows": [
                {**row, "capability_check": False, "base": 60.0, "value": 60.0 + change, "delta": delta}
            ],
        }

    runs = [run(-6, True, 10.0), run(-8, True, 20.0), run(-7, False, 30.0)]
    record = seeded_record(RecipeEntry(name="chain", seeds=[0, 1, 2]), runs)
    (row,) = record["rows"]
    # mean -7, sample sd sqrt(((1)^2 + (-1)^2 + 0) / 2) = 1
    assert row["delta"]["value"] == pytest.approx(-7.0) and row["delta"]["sd"] == pytest.approx(1.0)
    assert row["delta"]["per_seed"] == [-6, -8, -7] and row["delta"]["significant_seeds"] == 2
    assert row["value"] == pytest.approx(53.0) and row["base"] == 60.0
    assert record["wall_time_s"] == 60.0 and [r["training_seed"] for r in record["runs"]] == [0, 1, 2]
    page = markdown({"ablation": "a.yaml", "split": "validation", "recipes": [record]}, None)
    assert "| crows_pairs/pct_stereotype (base 60) | -7.00 ± 1.00 (2/3*) |" in page
    assert "| training seeds | 0, 1, 2 |" in page


def test_tradeoff_point_of_a_recipe():
    def row(kind, goal, base, value, capability=False):
        return {
            "kind": kind,
            "goal": goal,
            "base": base,
            "value": value,
            "capability_check": capability,
            "delta": {"value": value - base},
        }

    record = {
        "rows": [
            row("bias", 50.0, 60.0, 55.0),  # distance 10 -> 5: 0.5
            row("bias", "lower", 20.0, 25.0),  # 25% worse: 1.25
            row("retention", "higher", 40.0, 39.0, capability=True),  # -1 point
            row("retention", "higher", 30.0, 33.0, capability=True),  # +3 points
            row("retention", "lower", 10.0, 12.0),  # not a capability metric: ignored
        ]
    }
    x, y = tradeoff(record)
    assert x == pytest.approx((0.5 + 1.25) / 2) and y == pytest.approx((-1 + 3) / 2)
    assert tradeoff({"rows": record["rows"][:2]}) is None  # no capability metric, no point


@pytest.mark.slow
def test_three_recipe_ablation_on_tiny_random(data_dir, tmp_path, cli, monkeypatch):
    seeded = {"name": "sft-seeds", "stages": ["sft"], "seeds": [0, 1]}
    path = ablation_file(tmp_path, [*RECIPES, {"name": "full"}, seeded])
    runs = tmp_path / "runs"
    result = cli("results", "--config", path, "--runs-dir", runs, "--threads", "1")
    assert result.code == 0, result.err[-3000:]
    record = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert record["split"] == "validation"
    assert [r["name"] for r in record["recipes"]] == ["sft-only", "dpo-neutral", "full", "sft-seeds"]
    for recipe, stage in zip(record["recipes"][:3], ["sft", "dpo", "dpo"], strict=True):
        assert recipe["final_stage"] == stage and recipe["wall_time_s"] > 0
        metrics = {(r["suite"], r["metric"]): r for r in recipe["rows"]}
        crows = metrics[("crows_pairs", "pct_stereotype")]
        assert crows["delta"]["ci95"] is not None and crows["delta"]["method"]
        results = json.loads((runs / f"abl-{recipe['name']}" / "eval" / stage / "results.json").read_text())
        assert results["split"]["mode"] == "validation"
        assert results["suites"]["crows_pairs"]["split"] == "validation"
    # the base model was evaluated once: the second recipe copied the first one's evaluation
    second = json.loads((runs / "abl-dpo-neutral" / "pipeline.json").read_text())
    assert "copied_from" in second["evals"]["base"]
    first_base = json.loads((runs / "abl-sft-only" / "eval" / "base" / "results.json").read_text())
    second_base = json.loads((runs / "abl-dpo-neutral" / "eval" / "base" / "results.json").read_text())
    assert first_base["metrics"] == second_base["metrics"]
    # the full chain's SFT stage and its evaluation are sft-only's, copied (model, not checkpoints)
    full = json.loads((runs / "abl-full" / "pipeline.json").read_text())
    assert "copied_from" in full["stages"]["sft"] and "copied_from" in full["evals"]["sft"]
    assert "copied_from" not in full["stages"]["dpo"]
    sft_model = runs / "abl-full" / "stages" / "sft" / "model"
    assert full["stages"]["sft"]["model"] == str(sft_model) and (sft_model / "config.json").is_file()
    assert not (runs / "abl-full" / "stages" / "sft" / "checkpoints").exists()
    full_dpo = json.loads((runs / "abl-full" / "stages" / "dpo" / "stage.json").read_text())
    assert full_dpo["input_model"]["path"] == str(sft_model)
    assert record["recipes"][2]["wall_time_s"] > record["recipes"][0]["wall_time_s"]
    # the seeded recipe: seed 0 is sft-only's training (copied), seed 1 trained anew; mean and sd of both
    seeds = record["recipes"][3]
    assert seeds["seeds"] == [0, 1] and [Path(r["run_dir"]).name for r in seeds["runs"]] == [
        "abl-sft-seeds-s0",
        "abl-sft-seeds-s1",
    ]
    assert (
        "copied_from"
        in json.loads((runs / "abl-sft-seeds-s0" / "pipeline.json").read_text())["stages"]["sft"]
    )
    assert (
        "copied_from"
        not in json.loads((runs / "abl-sft-seeds-s1" / "pipeline.json").read_text())["stages"]["sft"]
    )
    s1_stage = json.loads((runs / "abl-sft-seeds-s1" / "stages" / "sft" / "stage.json").read_text())
    assert s1_stage["config"]["seed"] == 1
    crows = next(r for r in seeds["rows"] if (r["suite"], r["metric"]) == ("crows_pairs", "pct_stereotype"))
    changes = [
        next(x for x in run["rows"] if x["metric"] == "pct_stereotype" and x["suite"] == "crows_pairs")[
            "delta"
        ]["value"]
        for run in seeds["runs"]
    ]
    assert crows["delta"]["per_seed"] == changes and crows["delta"]["value"] == pytest.approx(
        sum(changes) / 2
    )
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| | sft-only | dpo-neutral | full |" in page and "| stages | sft | dpo | sft → dpo |" in page
    assert "| crows_pairs/pct_stereotype (base " in page and "validation split" in page
    assert (tmp_path / "docs" / "results.png").read_bytes()[:4] == b"\x89PNG"

    # A rerun does no work and writes the same record.
    import alignment.pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a finished step was redone: {args}")

    monkeypatch.setattr(alignment.pipeline, "run_safealign", forbidden)
    again = cli("results", "--config", path, "--runs-dir", runs)
    assert again.code == 0, again.err[-3000:]
    assert json.loads((tmp_path / "docs" / "results.json").read_text())["recipes"] == record["recipes"]
