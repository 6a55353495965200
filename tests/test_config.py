"""YAML recipe + command-line flag configs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from alignment.config import add_dataclass_flags, config_from_args, from_dict, parse_config
from alignment.errors import SafealignError


@dataclass
class TrainArgs:
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    max_steps: int = field(default=10, metadata={"help": "optimizer steps"})
    loss_type: Literal["sigmoid", "ipo"] = field(default="sigmoid", metadata={"help": "DPO loss"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters"})
    targets: list[str] = field(default_factory=lambda: ["q_proj"], metadata={"help": "LoRA targets"})
    output_dir: str | None = field(default=None, metadata={"help": "where to write"})

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


@dataclass
class ModelArgs:
    model: str = field(default="tiny-random", metadata={"help": "model spec"})


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_yaml_then_flags(tmp_path):
    recipe = write(
        tmp_path, "learning_rate: 1e-5\nmax_steps: 20\nmodel: smollm2-135m-instruct\nuse_lora: true\n"
    )
    train, model = parse_config((TrainArgs, ModelArgs), ["--config", recipe, "--max_steps", "7"])
    assert train.learning_rate == 1e-5  # YAML reads 1e-5 as a string; it is coerced
    assert train.max_steps == 7  # the flag wins over the recipe
    assert train.use_lora is True and model.model == "smollm2-135m-instruct"
    assert train.loss_type == "sigmoid" and train.targets == ["q_proj"]


def test_flags_without_yaml():
    (train,) = parse_config(TrainArgs, ["--loss_type", "ipo", "--targets", "q_proj", "v_proj"])
    assert train.loss_type == "ipo" and train.targets == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rat: 1e-5\n", "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("max_steps: ten\n", "key 'max_steps': expected int, got str 'ten'"),
        ("loss_type: hinge\n", "key 'loss_type': 'hinge' is not one of 'sigmoid', 'ipo'"),
        ("use_lora: 3\n", "key 'use_lora': expected bool"),
        ("targets: 5\n", "key 'targets': expected a list"),
        ("- a\n- b\n", "must be a mapping"),
        ("max_steps: [1, 2\n", "invalid YAML"),
        ("max_steps: 0\n", "max_steps must be >= 1"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, text, message):
    recipe = write(tmp_path, text)
    with pytest.raises(SafealignError) as info:
        parse_config((TrainArgs, ModelArgs), ["--config", recipe])
    assert recipe in str(info.value) and message in str(info.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(SafealignError, match="config file not found"):
        parse_config(TrainArgs, ["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"model: caf\xe9\n")
    with pytest.raises(SafealignError, match="not UTF-8"):
        parse_config(ModelArgs, ["--config", str(bad)])


def test_bad_flag_is_an_argparse_usage_error():
    with pytest.raises(SystemExit) as info:
        parse_config(TrainArgs, ["--max_steps", "many"])
    assert info.value.code == 2


def test_from_dict_for_yaml_sections():
    assert from_dict(TrainArgs, {"max-steps": 3}).max_steps == 3
    with pytest.raises(SafealignError, match="recipe.yaml:stages.sft, key 'max_steps'"):
        from_dict(TrainArgs, {"max_steps": "x"}, "recipe.yaml:stages.sft")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--use-lora"], True),
        (["--use_lora"], True),
        (["--use-lora", "false"], False),
        (["--use_lora", "yes"], True),
        (["--no-use-lora"], False),
        (["--no_use_lora"], False),
    ],
)
def test_one_flag_convention_for_booleans(tmp_path, flags, expected):
    recipe = write(tmp_path, f"use_lora: {str(not expected).lower()}\n")
    (train,) = parse_config(TrainArgs, ["--config", recipe, *flags])
    assert train.use_lora is expected


def test_flag_spellings_lists_and_the_shared_helper(tmp_path):
    (train,) = parse_config(TrainArgs, ["--max-steps", "3", "--output_dir", "out", "--targets", "a,b", "c"])
    assert train.max_steps == 3 and train.output_dir == "out" and train.targets == ["a", "b", "c"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_dataclass_flags(parser, TrainArgs)
    args = parser.parse_args(["--config", write(tmp_path, "max_steps: 9\nuse_lora: true\n"), "--no-use-lora"])
    train = config_from_args(TrainArgs, args)
    assert train.max_steps == 9 and train.use_lora is False  # an unset flag keeps the recipe's value
    with pytest.raises(SystemExit):
        parser.parse_args(["--use-lora", "maybe"])
