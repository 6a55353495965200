"""Shared test setup: offline hub, a tiny model, the benchmark data dir, and a CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """Path of the ``tiny-random`` checkpoint (built once into the cache)."""
    from alignment.models import resolve_model

    return resolve_model("tiny-random").path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark data (``SAFEALIGN_DATA_DIR``); tests that need it skip when it is unset."""
    value = os.environ.get("SAFEALIGN_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("SAFEALIGN_DATA_DIR is not set; CI sets it to ../shared/data")
    return Path(value)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``safealign ARGS...`` in-process and return its exit code, stdout and stderr."""
    from alignment.cli import main

    def run(*args: str) -> CliResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
