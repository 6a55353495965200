"""The ``safealign`` command line: help, env, models, generate and error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("env", "models", "generate"):
        assert command in result.out


def test_env_json_shows_packaged_models(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("env", "--json")
    facts = json.loads(result.out)
    assert result.code == 0 and facts["offline"] is True
    assert set(facts["packaged"]) >= {"smollm2-135m-instruct", "minilm-l6", "jigsaw-bilstm", "profanity"}
    assert facts["versions"]["torch"].startswith("2.")


def test_env_table_and_models_list(cli):
    env = cli("env")
    assert env.code == 0 and "safealign environment" in env.out and "packaged: minilm-l6" in env.out
    listing = cli("models", "list")
    assert listing.code == 0 and "tiny-random" in listing.out and "jigsaw-bilstm" in listing.out


def test_generate_on_tiny_model(cli, tiny_model):
    result = cli("generate", "--model", tiny_model, "--max-new-tokens", "5", "hello")
    assert result.code == 0
    sampled = [
        cli(
            "generate",
            "--model",
            tiny_model,
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.0",
            "--seed",
            "3",
            "hi",
        ).out
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # seeded sampling is reproducible


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["generate", "--model", "nonexistent-alias", "hi"], "unknown model alias 'nonexistent-alias'"),
        (["generate", "--model", "/no/such/dir", "hi"], "does not exist"),
        (["generate", "--model", "tiny-random", "--max-new-tokens", "0", "hi"], "--max-new-tokens"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(cli, args, fragment):
    result = cli(*args)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("safealign: error:") and fragment in lines[0]


def test_console_script_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", "generate", "--model", "nope", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown model alias 'nope'" in proc.stderr


def test_a_full_disk_is_one_line_naming_the_file(cli, monkeypatch):
    import errno

    from alignment.cli import env_cmd

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/sft/model.safetensors")

    monkeypatch.setattr(env_cmd, "run", full)
    result = cli("env")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1
    assert "out of disk space" in lines[0] and "/runs/sft/model.safetensors" in lines[0]


def test_other_os_errors_are_not_reported_as_a_full_disk(cli, monkeypatch):
    from alignment.cli import env_cmd

    def missing(args):
        raise FileNotFoundError("gone")

    monkeypatch.setattr(env_cmd, "run", missing)
    with pytest.raises(FileNotFoundError):
        cli("env")
