"""Safety: no code shipped with a model runs unless asked, checkpoints never unpickle objects, and reward
plugins are imported only when a spec names them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from corpus import CROWS, CROWS_HEADER, CROWS_ROWS, write_files
from stages_support import write_sft

from alignment.errors import SafealignError

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = sorted(p for pkg in ("alignment", "reward", "data_builders") for p in (ROOT / pkg).rglob("*.py"))


def marker_code(marker: Path) -> str:
    """Python that leaves ``marker`` behind when it runs (imported, unpickled or executed)."""
    return f"open({str(marker)!r}, 'w').write('ran')\n"


# ---- trust_remote_code -----------------------------------------------------------------------------------


def test_no_product_code_turns_trust_remote_code_on():
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in PRODUCT
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"trust_remote_code\s*(=|:\s*bool\s*=)\s*True", line)
    ]
    assert not hits, hits
    from alignment.stages.common import StageConfig

    assert StageConfig().trust_remote_code is False


@pytest.mark.parametrize("command", ["generate", "eval", "train"])
def test_model_with_its_own_code_is_refused_and_its_code_never_runs(cli, tmp_path, command):
    model = tmp_path / "custom-model"
    model.mkdir()
    marker = tmp_path / "REMOTE_CODE_RAN"
    auto_map = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    (model / "config.json").write_text(json.dumps({"model_type": "custom-lm", "auto_map": auto_map}))
    (model / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["custom.Tok", None]}})
    )
    (model / "custom.py").write_text(marker_code(marker))
    write_files(tmp_path, {CROWS: CROWS_HEADER + CROWS_ROWS}, {})
    data = write_sft(tmp_path / "sft", train=4, test=2)
    argv = {
        "generate": ("generate", "--model", model, "hello"),
        "eval": ("eval", "--model", model, "--suites", "crows_pairs", "--out", tmp_path / "eval"),
        "train": ("train", "sft", "--model", model, "--dataset", data, "--output_dir", tmp_path / "run"),
    }[command]
    result = cli(*argv)
    lines = [line for line in result.err.splitlines() if line.startswith("safealign: error:")]
    assert result.code == 2 and "Traceback" not in result.err, result.err[-2000:]
    assert len(lines) == 1 and "ships its own Python code" in lines[0] and "--trust-remote-code" in lines[0]
    assert not marker.exists()


# ---- checkpoints: safetensors, or torch.load(weights_only=True) -------------------------------------------


def test_every_torch_load_in_the_product_is_weights_only():
    calls = []
    for path in PRODUCT:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):  # the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append((f"{path.relative_to(ROOT)}", text[match.start() : end + 1]))
    assert calls, "expected the PPO checkpoint loader to use torch.load"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe
    pickles = [
        f"{p.relative_to(ROOT)}"
        for p in PRODUCT
        if re.search(r"\bpickle\.loads?\(|\bdill\.|joblib\.load\(", p.read_text(encoding="utf-8"))
    ]
    assert not pickles, pickles


def test_a_checkpoint_holding_python_objects_is_refused_not_unpickled(tmp_path):
    import torch

    from alignment.stages.ppo.checkpoint import load_checkpoint

    marker = tmp_path / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (exec, (marker_code(marker),))

    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    torch.save({"policy.weight": Payload()}, checkpoint / "trainable.pt")
    with pytest.raises(SafealignError, match=r"trainable.pt: refused to load: it holds Python objects"):
        load_checkpoint(checkpoint, policy=None, optimizer=None, scheduler=None)
    assert not marker.exists()


def test_final_models_are_saved_as_safetensors(tmp_path):
    from alignment.stages.sft import SFTStageConfig, run_sft

    data = write_sft(tmp_path / "sft", train=8, test=2)
    cfg = SFTStageConfig(
        model="tiny-random", dataset=str(data), max_steps=1, eval_split="none", max_length=64
    )
    model_dir = run_sft(cfg, tmp_path / "run")
    files = {p.name for p in model_dir.iterdir()}
    assert "model.safetensors" in files and not files & {"pytorch_model.bin", "training_args.bin"}


# ---- reward plugins load only when named -----------------------------------------------------------------


@pytest.fixture
def planted_plugin(tmp_path, monkeypatch):
    """A plugin module on sys.path, registered as the entry point ``planted`` (safealign.rewards), whose
    import leaves a marker file."""
    marker = tmp_path / "PLUGIN_IMPORTED"
    site = tmp_path / "site"
    site.mkdir()
    (site / "planted_reward.py").write_text(
        marker_code(marker)
        + "def score(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n"
    )
    dist = site / "planted_reward-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: planted-reward\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[safealign.rewards]\nplanted = planted_reward:score\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "planted_reward", raising=False)
    return marker, site / "planted_reward.py"


def test_importing_listing_and_checking_rewards_imports_no_plugin(planted_plugin):
    """In a fresh interpreter that sees the plugin: import the reward package, list the rewards, check a
    spec naming the plugin, score with a built-in. The plugin is listed, and never imported."""
    import os
    import subprocess

    marker, file = planted_plugin
    code = (
        "import reward, reward.registry as r\n"
        "from alignment.cli import main\n"
        "assert 'planted' in r.known_names()\n"
        f"r.check_reward_spec({{'components': ['planted', {str(file) + ':score'!r}, 'non_empty']}}, 'spec')\n"
        "assert main(['reward', 'list']) == 0\n"
        "assert main(['reward', 'score', '--reward', 'non_empty', '--text', 'hi']) == 0\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(file.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "planted" in done.stdout  # listed from its metadata...
    assert not marker.exists()  # ...but never imported


@pytest.mark.parametrize("spec", ["planted", "file"])
def test_a_plugin_is_imported_when_a_spec_names_it(planted_plugin, spec):
    from reward.registry import build_reward

    marker, file = planted_plugin
    fn = build_reward("planted" if spec == "planted" else f"{file}:score")
    assert fn(["p"], ["c"]) == [1.0]
    assert marker.exists()


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt"])
def test_a_pickled_state_in_a_trainer_checkpoint_is_refused_on_resume(cli, tmp_path, name):
    """A tampered checkpoint of an interrupted SFT run: resuming names the file and never unpickles it
    (and never suggests turning weights-only loading off)."""
    import shutil

    import torch

    data = write_sft(tmp_path / "sft", train=8, test=2)
    argv = ["train", "sft", "--model", "tiny-random", "--dataset", data, "--max_steps", "4"]
    argv += ["--save_steps", "2", "--eval_split", "none", "--output_dir", tmp_path / "run"]
    assert cli(*argv).code == 0
    run = tmp_path / "run"
    record = json.loads((run / "stage.json").read_text())
    (run / "stage.json").write_text(json.dumps({**record, "status": "interrupted"}))
    shutil.rmtree(run / "model")
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    marker = tmp_path / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (exec, (marker_code(marker),))

    torch.save({"state": Payload()}, run / "checkpoints" / "checkpoint-2" / name)
    result = cli(*argv, "--resume")
    lines = [line for line in result.err.splitlines() if line.startswith("safealign: error:")]
    assert result.code == 2 and "Traceback" not in result.err, result.err[-2000:]
    assert len(lines) == 1 and f"checkpoint-2/{name}: refused to load" in lines[0], result.err
    assert "weights_only" not in result.err and not marker.exists()
    assert json.loads((run / "stage.json").read_text())["status"] == "interrupted"
