"""The bad-input corpus: every command that reads user input fails with one line and writes nothing.

Each case (``corpus.py``) writes its bad files into the test's folder and runs ``safealign`` in-process.
It must exit with code 2, print exactly one line on stderr (``safealign: error: ...``) naming the file,
the row or key, and the problem, show no traceback, and leave the folder exactly as it was: no new file
or directory, and any earlier output byte for byte unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import ALL_CASES, Case, fill, snapshot, write_files
from ppo_support import write_prompts
from stages_support import write_preference, write_sft


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, tiny_model) -> dict[str, str]:
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("datasets")
    bad = root / "bad-sft"
    rows = [{"prompt": 7, "completion": "text"}, {"prompt": 8, "completion": "more"}]
    DatasetDict(train=Dataset.from_list(rows), test=Dataset.from_list(rows)).save_to_disk(str(bad))
    texts = root / "texts"
    plain = [{"text": "Tell me about the nurse."}, {"text": "Tell me about the engineer."}]
    DatasetDict(train=Dataset.from_list(plain), test=Dataset.from_list(plain)).save_to_disk(str(texts))
    return {
        **broken_models(root, tiny_model),
        "texts": str(texts),
        "sft": str(write_sft(root / "sft", train=8, test=2)),
        "pref": str(write_preference(root / "pref", train=8, test=2)),
        "prompts": str(write_prompts(root / "prompts", train=8, test=2)),
        "badsft": str(bad),
        "tiny": tiny_model,
    }


def broken_models(root: Path, tiny_model: str) -> dict[str, str]:
    """``nanmodel``: tiny-random with one NaN weight; ``hugemodel``: finite weights whose logits overflow;
    ``badtemplate``: one whose chat template reaches for Python internals, which the sandbox refuses."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for name in ("nanmodel", "badtemplate", "hugemodel"):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    with torch.no_grad():
        norm = model.model.norm.weight.clone()
        model.model.norm.weight.fill_(3e38)  # finite weights whose logits overflow
    model.save_pretrained(root / "hugemodel")
    with torch.no_grad():
        model.model.norm.weight.copy_(norm)
        model.lm_head.weight[3, 0] = float("nan")
    model.save_pretrained(root / "nanmodel")
    config = root / "badtemplate" / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    config.write_text(json.dumps(data))
    (root / "badtemplate" / "chat_template.jinja").unlink(missing_ok=True)
    return {name: str(root / name) for name in ("nanmodel", "badtemplate", "hugemodel")}


def run_case(case: Case, cli, tmp_path: Path, datasets: dict[str, str]):
    places = {"tmp": str(tmp_path), **datasets}
    write_files(tmp_path, case.files, places)
    for argv in case.before:
        done = cli(*(fill(a, places) for a in argv))
        assert done.code == 0, f"setup command failed: {done.err}"
    write_files(tmp_path, case.damage, places)
    before = snapshot(tmp_path)
    result = cli(*(fill(a, places) for a in case.argv))
    return result, before


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input_exits_2_with_one_line_and_no_output(case, cli, tmp_path, datasets):
    result, before = run_case(case, cli, tmp_path, datasets)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, f"exit {result.code}\n{result.err[-3000:]}"
    assert "Traceback" not in result.err
    assert len(lines) == 1, result.err
    assert lines[0].startswith("safealign: error: "), lines[0]
    missing = [fragment for fragment in case.expect if fill(fragment, {"tmp": str(tmp_path)}) not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert snapshot(tmp_path) == before, "the failed command changed or left files behind"


def test_the_corpus_covers_every_command_that_reads_input():
    commands = {
        " ".join(c.argv[:2]) if c.argv[0] in ("data", "reward", "train", "models") else c.argv[0]
        for c in ALL_CASES
    }
    assert commands >= {
        "data build",
        "data inspect",
        "reward score",
        "reward train-stereotype",
        "eval",
        "train sft",
        "train dpo",
        "train ppo",
        "train grpo",
        "train rloo",
        "pipeline",
        "report",
        "generate",
        "models prepare",
    }
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)


def test_discarded_run_leaves_nothing_but_finished_work_is_kept(tmp_path):
    import json

    from alignment.errors import SafealignError
    from alignment.io import atomic_write_json
    from alignment.runs import run_context

    def fail(name: str, write: bool) -> None:
        with pytest.raises(SafealignError):
            with run_context(name, root=tmp_path, discard_on_input_error=True) as run:
                if write:
                    atomic_write_json(run.dir / "partial" / "suite.json", {"done": True})
                raise SafealignError("bad input")

    fail("fresh", write=False)
    assert not (tmp_path / "fresh").exists()
    with run_context("earlier", root=tmp_path):
        pass
    earlier = snapshot(tmp_path / "earlier")
    fail("earlier", write=False)
    assert snapshot(tmp_path / "earlier") == earlier
    fail("worked", write=True)
    manifest = json.loads((tmp_path / "worked" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and (tmp_path / "worked" / "partial" / "suite.json").is_file()
