"""Fault injection: SIGKILL at random points, a full disk or a refused write, and rewards that fail.

- A stage killed at seeded random moments (mid-step, mid-checkpoint) and resumed each time ends with the
  same weights as a run that was never interrupted.
- A write that fails (ENOSPC, EACCES) leaves the previous output byte for byte, no temporary files, and
  one error line naming the path (exit code 2 from the command line).
- A reward plugin that raises or returns NaN stops PPO with the plugin's name in the one error line and
  a kept, complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from corpus import CROWS, CROWS_HEADER, CROWS_ROWS, GOOD_CSV, snapshot, write_files
from ppo_support import write_prompts
from stages_support import write_sft

from alignment.errors import SafealignError

# ---- SIGKILL at random points ---------------------------------------------------------------------------

KILL_SEED = 20240611
SFT_FLAGS = [
    "--model",
    "tiny-random",
    "--max_steps",
    "48",
    "--save_steps",
    "6",
    "--learning_rate",
    "1e-3",
    "--logging_steps",
    "6",
    "--eval_split",
    "none",
    "--max_length",
    "64",
]


def newest_complete_checkpoint(out: Path) -> int:
    from alignment.stages.rundir import checkpoints

    steps = [step for step, _, complete in checkpoints(out / "checkpoints") if complete]
    return max(steps, default=0)


def kill_after_checkpoint(flags: list[str], out: Path, target: int, delay: float, log: Path) -> int:
    """Run ``safealign train sft`` in a subprocess; SIGKILL it ``delay`` seconds after a checkpoint at step
    ``target`` or later is complete. Returns the newest complete checkpoint left behind."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    with open(log, "ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alignment", "train", "sft", *flags, "--output_dir", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 180
        while newest_complete_checkpoint(out) < target:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no checkpoint {target} within 180 s"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return newest_complete_checkpoint(out)


@pytest.mark.slow
def test_sft_killed_at_random_points_resumes_to_the_same_weights(tmp_path):
    """Three SIGKILLs at seeded random moments (after a random number of checkpoint events, plus a random
    delay that lands mid-step or mid-save); every restart resumes; the final weights equal a straight run."""
    from safetensors.torch import load_file

    from alignment.config import parse_config
    from alignment.stages.sft import SFTStageConfig, run_sft

    data = write_sft(tmp_path / "sft", train=32, test=4)
    flags = [*SFT_FLAGS, "--dataset", str(data)]
    rng = random.Random(KILL_SEED)
    out, reached, kills = tmp_path / "killed", 0, []
    for attempt in range(3):
        target = reached + 6 * rng.randint(1, 2)  # one or two more checkpoint events
        delay = rng.uniform(0.0, 0.2)
        extra = ["--resume"] if attempt else []
        reached = kill_after_checkpoint([*flags, *extra], out, target, delay, tmp_path / "stderr.txt")
        kills.append((target, round(delay, 3), reached))
        assert not (out / "model").exists(), f"the run finished before kill {attempt + 1}: {kills}"
        assert json.loads((out / "stage.json").read_text())["status"] == "running"
    (resumed_cfg,) = parse_config(SFTStageConfig, [*flags, "--resume"])
    run_sft(resumed_cfg, out)
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["global_step"] == 48
    assert len(record["segments"]) >= 2, record["segments"]
    assert record["steps"]["resumed_from_step"] == reached

    (straight_cfg,) = parse_config(SFTStageConfig, flags)
    run_sft(straight_cfg, tmp_path / "straight")
    resumed = load_file(out / "model" / "model.safetensors")
    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=f"{name} {kills}")


def test_sigterm_interrupts_like_ctrl_c_and_the_run_resumes(tmp_path):
    """A job scheduler cancels with SIGTERM: one line, exit 143, ``interrupted`` in stage.json and the
    manifest, complete checkpoints kept, and ``--resume`` finishes the run."""
    data = write_sft(tmp_path / "sft", train=16, test=2)
    flags = [*SFT_FLAGS, "--dataset", str(data), "--max_steps", "24", "--save_steps", "3"]
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "alignment", "train", "sft", *flags, "--output_dir", str(out)]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 180
        while newest_complete_checkpoint(out) < 3:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    errors = [line for line in log.read_text().splitlines() if line.startswith("safealign: error:")]
    assert code == 143 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert errors == ["safealign: error: interrupted (SIGTERM); a training run continues with --resume"]
    assert json.loads((out / "stage.json").read_text())["status"] == "interrupted"
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert not (out / ".safealign.lock").exists() and not (out / "model").exists()
    done = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "completed" and record["steps"]["resumed_from_step"] >= 3


# ---- a full disk, a refused write ------------------------------------------------------------------------

FAULTS = {
    "ENOSPC": (errno.ENOSPC, "No space left on device"),
    "EACCES": (errno.EACCES, "Permission denied"),
}


def inject(monkeypatch, root: Path, fault: str) -> None:
    """Make writes under ``root`` fail: ENOSPC when data is flushed to disk, EACCES when a file is created
    or renamed into place (what a read-only folder does; tests run as root, which ignores chmod)."""
    code, text = FAULTS[fault]
    if fault == "ENOSPC":

        def fsync(fd):
            raise OSError(code, text)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(dst).startswith(str(root)):
                raise PermissionError(code, text, str(dst))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_atomic_writes_keep_the_previous_file_and_leave_no_temp(tmp_path, monkeypatch, fault):
    from alignment.io import atomic_dir, atomic_write_json

    target = atomic_write_json(tmp_path / "out" / "metrics.json", {"old": 1})
    folder = tmp_path / "out" / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "weights.bin").write_bytes(b"old weights")
    before = snapshot(tmp_path)
    inject(monkeypatch, tmp_path, fault)
    with pytest.raises(SafealignError, match=f"cannot write {target}: {FAULTS[fault][1]}"):
        atomic_write_json(target, {"new": 2})
    with pytest.raises(SafealignError, match=f"cannot write {folder}: {FAULTS[fault][1]}"):
        with atomic_dir(folder) as tmp:
            (tmp / "weights.bin").write_bytes(b"new weights")
            os.fsync(os.open(tmp / "weights.bin", os.O_RDONLY))
            os.replace(tmp / "weights.bin", tmp / "weights.bin")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_a_library_error_that_reports_a_full_disk_is_the_same_one_line(tmp_path):
    """safetensors reports ENOSPC as its own exception type (seen in CI, converting a model): the folder
    is left as it was and the error names its final path."""
    from alignment.io import atomic_dir

    folder = tmp_path / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "model.safetensors").write_bytes(b"old")
    before = snapshot(tmp_path)

    class SafetensorError(Exception):
        pass

    with pytest.raises(SafealignError, match=f"cannot write {folder}: No space left on device"):
        with atomic_dir(folder) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new, half")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert snapshot(tmp_path) == before


def test_atomic_dir_puts_the_previous_output_back_when_the_final_rename_fails(tmp_path, monkeypatch):
    from alignment.io import atomic_dir

    folder = tmp_path / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "weights.bin").write_bytes(b"old")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def replace(src, dst):  # moving the old folder aside works; moving the new one in is refused
        if Path(dst) == folder and Path(src).name.endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SafealignError, match="Permission denied"):
        with atomic_dir(folder) as tmp:
            (tmp / "weights.bin").write_bytes(b"new")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before and (folder / "weights.bin").read_bytes() == b"old"


COMMANDS = {
    "data-build": (
        (
            "data",
            "build",
            "sft",
            "--source",
            "rewrite_pairs",
            "--path",
            "{tmp}/pairs.csv",
            "--out",
            "{tmp}/out",
        ),
        "out",
    ),
    "reward-score": (
        ("reward", "score", "--reward", "non_empty", "--text", "hello", "--out", "{tmp}/scores.jsonl"),
        "scores.jsonl",
    ),
    "eval": (
        ("eval", "--model", "{tiny}", "--suites", "crows_pairs", "--split", "all", "--out", "{tmp}/eval"),
        "eval",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_failed_write_keeps_the_previous_output(cli, tmp_path, monkeypatch, tiny_model, command, fault):
    """Run a command once (a good output), then again while the disk is full or the folder refuses the
    write: exit 2, one line naming the path and the reason, the first output untouched."""
    argv, output = COMMANDS[command]
    args = [a.replace("{tmp}", str(tmp_path)).replace("{tiny}", tiny_model) for a in argv]
    write_files(tmp_path, {"pairs.csv": GOOD_CSV, CROWS: CROWS_HEADER + CROWS_ROWS}, {})
    assert cli(*args).code == 0
    if command == "data-build":
        args.append("--force")  # rebuild, so the write is attempted
    before = snapshot(tmp_path)
    inject(monkeypatch, tmp_path, fault)
    result = cli(*args)
    monkeypatch.undo()
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, result.err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("safealign: error: cannot write"), result.err
    assert str(tmp_path / output) in lines[0] and FAULTS[fault][1] in lines[0]
    assert snapshot(tmp_path) == before


# ---- rewards that raise or return NaN --------------------------------------------------------------------

FLAKY_PLUGIN = '''
import math

calls = {"n": 0}


def flaky(prompts, completions, **kwargs):
    """Scores spaces per character; on its third call it fails (MODE: raise or nan)."""
    calls["n"] += 1
    if calls["n"] == 3:
        if MODE == "raise":
            raise ConnectionError("scoring service unreachable")
        return [math.nan] * len(completions)
    return [c.count(" ") / max(len(c), 1) for c in completions]
'''


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_failing_reward_plugin_stops_ppo_with_its_name_and_a_kept_checkpoint(cli, tmp_path, tiny_model, mode):
    prompts = write_prompts(tmp_path / "prompts", train=8, test=2)
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text(f"MODE = {mode!r}\n" + FLAKY_PLUGIN, encoding="utf-8")
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(
        f"model: tiny-random\ndataset: {prompts}\nreward: {plugin}:flaky\nmax_steps: 4\nsave_steps: 1\n"
        "rollout_batch_size: 4\nper_device_train_batch_size: 4\nmax_new_tokens: 6\nmax_length: 64\n"
        "eval_split: none\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = cli("train", "ppo", "--config", recipe, "--output_dir", out)
    lines = [line for line in result.err.splitlines() if line.startswith("safealign: error:")]
    assert result.code == 2 and "Traceback" not in result.err, result.err[-2000:]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert "PPO stopped at step 2" in line and "'flaky' (my_rewards.py)" in line, line
    if mode == "raise":
        assert "raised ConnectionError: scoring service unreachable at my_rewards.py:" in line
    else:
        assert "returned NaN" in line and "4 of 4 completions" in line
    kept = out / "checkpoints" / "checkpoint-2"
    assert f"checkpoint kept at {kept}" in line
    record = json.loads((out / "stage.json").read_text())
    assert record["status"] == "stopped" and record["stopped"]["checkpoint"] == str(kept)
    state = json.loads((kept / "trainer_state.json").read_text())
    assert state["step"] == 2
    weights = torch.load(kept / "trainable.pt", weights_only=True)
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
