"""Robustness tests: every run gets its own runs and data folders inside tmp_path, offline."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Runs land in ``tmp_path/runs``; benchmark data comes only from ``tmp_path/data`` (empty unless
    a case writes files there); nothing is downloaded."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SAFEALIGN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SAFEALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAFEALIGN_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """The tiny model is fastest on one thread, and the CPU is shared with other test runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
