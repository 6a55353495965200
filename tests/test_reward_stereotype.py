"""The stereotype classifier: data and grouped splits, training, metrics, save/load, errors, real data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from alignment.errors import SafealignError
from data_builders.splits import assign_split
from reward.stereotype import (
    LABELS,
    StereotypeClassifier,
    StereotypeTrainConfig,
    load_examples,
    train_stereotype,
)
from reward.stereotype.metrics import expected_calibration_error, f1_per_label, summarize
from reward.stereotype.train import partial_label_loss

TARGETS = [f"group{i}" for i in range(40)]
WORDS = ["always", "never", "banana", "people", "are", "is", "the", "a", "kind", "rude", "text", "rewritten"]


def _tiny_encoder(folder):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS, *TARGETS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A tiny encoder and small StereoSet / CrowS-Pairs / rewrite files where the label is learnable."""
    return write_synthetic(tmp_path_factory.mktemp("stereo"))


def write_synthetic(root):
    encoder = _tiny_encoder(root / "encoder")
    with open(root / "stereoset.jsonl", "w") as handle:
        for target in TARGETS:
            for task in ("intrasentence", "intersentence"):
                row = {
                    "type": task,
                    "target": target,
                    "bias_type": "race" if target < "group2" else "gender",
                    "context": f"the {target} people."
                    if task == "intersentence"
                    else f"the {target} are BLANK.",
                    "stereotype": f"the {target} are always rude.",
                    "anti-stereotype": f"the {target} are never rude.",
                    "unrelated": f"the {target} are banana.",
                }
                handle.write(json.dumps(row) + "\n")
    with open(root / "crows.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        for i, target in enumerate(TARGETS):
            writer.writerow(
                [i, f"{target} people are always rude.", f"{target} people are never rude.", "stereo", "age"]
            )
    with open(root / "rewrite.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["biased_text", "debiased_text"])
        for target in TARGETS:
            writer.writerow([f"{target} is always rude text.", f"{target} is kind rewritten text."])
    paths = {
        "stereoset_path": str(root / "stereoset.jsonl"),
        "crows_pairs_path": str(root / "crows.csv"),
        "rewrite_path": str(root / "rewrite.csv"),
    }
    return root, encoder, paths


@pytest.fixture(scope="module")
def trained(synthetic):
    root, encoder, paths = synthetic
    config = StereotypeTrainConfig(
        out=str(root / "clf"), backbone=encoder, mode="head", epochs=60, head_learning_rate=0.01, **paths
    )
    return config, train_stereotype(config)


def test_examples_use_the_shared_grouped_split(synthetic):
    _, _, paths = synthetic
    files = {
        "stereoset": paths["stereoset_path"],
        "crows_pairs": paths["crows_pairs_path"],
        "rewrite": paths["rewrite_path"],
    }
    examples, provenance = load_examples(["stereoset", "crows_pairs", "rewrite"], files)
    assert len(examples) == 40 * 2 * 3 + 40 * 2 + 40 * 2
    for e in examples:
        assert e.split == assign_split(e.group, test_fraction=0.2, seed=0)
    stereoset = [e for e in examples if e.source == "stereoset"]
    assert {e.group for e in stereoset} == set(TARGETS)  # StereoSet groups by target term
    inter = next(e for e in stereoset if e.text.startswith("the group0 people."))
    assert inter.text.endswith(("rude.", "banana."))  # intersentence candidates follow their context
    rewrite = [e for e in examples if e.source == "rewrite"]
    assert {e.allowed for e in rewrite} == {("stereotype",), ("anti-stereotype", "unrelated")}
    assert provenance["sources"]["stereoset"]["sha256"] and provenance["split_rule"].startswith(
        "data_builders"
    )


def test_head_training_learns_and_reports_heldout_metrics(trained):
    config, metrics = trained
    stereoset = metrics["by_source"]["stereoset"]
    assert stereoset["macro_f1"] > 0.9 and stereoset["accuracy"] > 0.9  # chance is 1/3
    assert stereoset["roc_auc"] > 0.9 and stereoset["pair_accuracy"] > 0.9
    assert {"low", "high"} <= set(stereoset["macro_f1_ci95"])
    assert "macro_f1" not in metrics["by_source"]["rewrite"]  # one exact label only: no three-way score
    assert metrics["split"]["name"] == "heldout" and metrics["split"]["test_examples"] > 0
    assert "stereoset/race" in metrics["by_bias_type"]
    manifest = json.loads((config.out_dir / "manifest.json").read_text())
    curve = [point["loss"] for point in manifest["loss_curve"]]
    assert curve[-1] < curve[0] * 0.5
    assert set(manifest["data"]["sources"]) == {"stereoset", "crows_pairs", "rewrite"}


def test_split_file_keeps_training_and_heldout_groups_apart(trained):
    config, _ = trained
    split = json.loads((config.out_dir / "split.json").read_text())
    for source, sides in split.items():
        assert sides["train"] and sides["test"], source
        assert not set(sides["train"]) & set(sides["test"])
        assert all(assign_split(g) == "test" for g in sides["test"])


def test_saved_classifier_round_trips_and_batches(trained):
    config, _ = trained
    clf = StereotypeClassifier.load(config.out_dir)
    saved = [
        json.loads(line) for line in (config.out_dir / "heldout_predictions.jsonl").read_text().splitlines()
    ]
    texts = [row["text"] for row in saved[:12]]
    probs = clf.predict_proba(texts)
    assert probs == pytest.approx([row["probs"]["stereotype"] for row in saved[:12]], abs=1e-5)
    assert clf.predict_proba(texts, batch_size=1) == pytest.approx(probs, abs=1e-5)
    rows = clf.predict(["the group3 are always rude.", None, ""])
    assert all(abs(sum(r.values()) - 1) < 1e-5 and set(r) == set(LABELS) for r in rows)
    assert clf.predict_proba([]) == []
    assert clf.summary()["mode"] == "head" and clf.summary()["heldout_macro_f1"] > 0.9


def test_stereotype_rewards_use_the_classifier(trained):
    from reward.registry import build_reward

    config, _ = trained
    texts = ["the group7 are always rude.", "the group7 are banana."]
    stereo = build_reward({"reward": "stereotype", "args": {"model": str(config.out_dir)}})
    anti = build_reward({"reward": "anti_stereotype", "args": {"model": str(config.out_dir)}})
    p = stereo(["q", "q"], texts)
    assert p[0] > 0.5 > p[1]
    assert anti(["q", "q"], texts) == pytest.approx([1 - v for v in p])


def test_full_fine_tune_updates_the_encoder(synthetic):
    root, encoder, paths = synthetic
    config = StereotypeTrainConfig(
        out=str(root / "full"),
        backbone=encoder,
        mode="full",
        epochs=1,
        sources=["stereoset"],
        stereoset_path=paths["stereoset_path"],
    )
    metrics = train_stereotype(config)
    before = StereotypeClassifier.from_backbone(encoder).encoder.state_dict()
    after = StereotypeClassifier.load(config.out_dir).encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (
        metrics["overall"]["n"] > 0
        and json.loads((config.out_dir / "manifest.json").read_text())["loss_curve"]
    )


def test_missing_and_incompatible_model_dirs(tmp_path, trained):
    with pytest.raises(SafealignError, match="no stereotype classifier at .*train-stereotype --out"):
        StereotypeClassifier.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafealignError, match="no classifier.json"):
        StereotypeClassifier.load(tmp_path / "empty")
    config, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((config.out_dir / "classifier.json").read_text())
    (broken / "classifier.json").write_text(json.dumps(dict(meta, version=99)))
    with pytest.raises(SafealignError, match="version 99 is not"):
        StereotypeClassifier.load(broken)
    (broken / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(SafealignError, match="incomplete or incompatible"):
        StereotypeClassifier.load(broken)


def test_config_validation():
    with pytest.raises(ValueError, match="mode must be one of"):
        StereotypeTrainConfig(mode="linear")
    with pytest.raises(ValueError, match="sources must be among"):
        StereotypeTrainConfig(sources=["bbq"])


def test_train_stereotype_cli(cli, synthetic, tmp_path):
    root, encoder, paths = synthetic
    recipe = tmp_path / "stereo.yaml"
    recipe.write_text(f"backbone: {encoder}\nmode: head\nepochs: 5\nsources: [stereoset, crows_pairs]\n")
    result = cli(
        "reward",
        "train-stereotype",
        "--config",
        recipe,
        "--out",
        tmp_path / "clf",
        "--stereoset-path",
        paths["stereoset_path"],
        "--crows_pairs_path",
        paths["crows_pairs_path"],
    )
    assert result.code == 0, result.err
    assert "stereoset" in result.out and (tmp_path / "clf" / "metrics.json").is_file()
    assert json.loads((tmp_path / "clf" / "manifest.json").read_text())["config"]["epochs"] == 5
    result = cli("reward", "train-stereotype", "--mode", "linear", "--out", tmp_path / "x")
    assert result.code == 2 and "mode must be one of" in result.err
    recipe.write_text("epoch: 3\n")
    result = cli("reward", "train-stereotype", "--config", recipe)
    assert result.code == 2 and "unknown key 'epoch'" in result.err


def test_metric_helpers_match_hand_computation():
    from sklearn.metrics import f1_score

    gold, pred = [0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1]
    assert f1_per_label(gold, pred, [0, 1, 2]) == pytest.approx(f1_score(gold, pred, average=None).tolist())
    assert expected_calibration_error([0.05, 0.15, 0.95], [False, False, True]) == pytest.approx(
        (0.05 + 0.15 + 0.05) / 3, abs=1e-6
    )
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    both = partial_label_loss(logits, torch.tensor([[False, True, True]]))
    p = torch.softmax(logits, -1)[0]
    assert both.item() == pytest.approx(-float(torch.log(p[1] + p[2])))
    assert summarize([], np.zeros((0, 3))) == {"n": 0}


@pytest.mark.slow
def test_real_data_head_classifier_beats_chance(data_dir, tmp_path):
    """MiniLM-L6 (frozen) + linear head on part of the real StereoSet train split; held-out targets only."""
    torch.set_num_threads(2)
    config = StereotypeTrainConfig(out=str(tmp_path / "clf"), mode="head", sources=["stereoset"], limit=900)
    metrics = train_stereotype(config)
    stereoset = metrics["by_source"]["stereoset"]
    assert stereoset["n"] == 900
    assert stereoset["macro_f1"] > 0.45  # chance: 0.33 (three balanced labels)
    assert stereoset["roc_auc"] > 0.6
