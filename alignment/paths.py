"""Where safealign keeps things: the model cache, the benchmark data dir, run directories."""

from __future__ import annotations

import os
from pathlib import Path

from alignment.errors import SafealignError


def cache_dir() -> Path:
    """The cache for converted and generated models: ``SAFEALIGN_CACHE`` or ``~/.cache/safealign``."""
    return Path(os.environ.get("SAFEALIGN_CACHE") or Path.home() / ".cache" / "safealign").expanduser()


def data_dir(required: bool = False) -> Path | None:
    """The benchmark data folder from ``SAFEALIGN_DATA_DIR`` (layout: docs/architecture.md, "Data").

    Returns None when the variable is unset; raises when ``required`` and it is unset or missing.
    """
    value = os.environ.get("SAFEALIGN_DATA_DIR")
    if not value:
        if required:
            raise SafealignError(
                "SAFEALIGN_DATA_DIR is not set: point it at a folder with the benchmark data "
                "(see README, 'Data') or pass an explicit path"
            )
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise SafealignError(f"SAFEALIGN_DATA_DIR={value} is not a directory")
    return path


def runs_dir() -> Path:
    """Parent folder of run directories: ``SAFEALIGN_RUNS`` or ``./runs``."""
    return Path(os.environ.get("SAFEALIGN_RUNS") or "runs").expanduser()


def is_offline() -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
