"""Run directories: ``runs/<name>/`` with a ``manifest.json`` that says what ran, how, and how it ended.

>>> import tempfile
>>> run = start_run("demo", command=["safealign", "demo"], config={"lr": 1e-5}, seed=0,
...                 root=tempfile.mkdtemp())
>>> run.manifest["status"]
'running'
>>> finish_run(run)["status"]
'completed'
"""

from __future__ import annotations

import dataclasses
import getpass
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import atomic_write_bytes, atomic_write_json
from alignment.paths import runs_dir

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "safealign",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "tokenizers",
    "detoxify",
    "numpy",
    "deepspeed",
    "bitsandbytes",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        with suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the source tree safealign runs from (with ``+dirty`` when modified), or None."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config


@dataclass
class Run:
    """An open run directory and its manifest (kept in memory and on disk in step)."""

    dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def path(self, *parts: str) -> Path:
        """A path inside the run directory."""
        return self.dir.joinpath(*parts)

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest (dicts merge one level deep) and save it atomically."""
        for key, value in fields.items():
            value = _jsonable(value)
            if isinstance(value, dict) and isinstance(self.manifest.get(key), dict):
                self.manifest[key].update(value)
            else:
                self.manifest[key] = value
        atomic_write_json(self.dir / MANIFEST, self.manifest)


def start_run(
    name: str,
    *,
    command: list[str] | None = None,
    config: Any = None,
    seed: int | None = None,
    root: str | Path | None = None,
) -> Run:
    """Open ``<root>/<name>/`` (created if needed) and write a manifest with status ``running``.

    A previous manifest in the same directory is kept under ``previous_runs`` so resumed runs keep
    their history.
    """
    if not _NAME_RE.match(name):
        raise SafealignError(
            f"run name {name!r} is not valid: use letters, digits, '.', '_' and '-' (no slashes)"
        )
    run_dir = Path(root or runs_dir()) / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafealignError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    previous = load_manifest(run_dir) if (run_dir / MANIFEST).exists() else None
    from alignment.device import describe_device

    manifest: dict[str, Any] = {
        "name": name,
        "status": "running",
        "command": command if command is not None else sys.argv,
        "config": _jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": describe_device(),
        "host": {
            "hostname": socket.gethostname(),
            "user": getpass.getuser(),
            "platform": platform.platform(),
        },
        "started_at": _now(),
        "ended_at": None,
        "wall_time_s": None,
    }
    if previous:
        manifest["previous_runs"] = previous.pop("previous_runs", []) + [
            {k: previous.get(k) for k in ("status", "started_at", "ended_at", "command")}
        ]
    run = Run(dir=run_dir, manifest=manifest)
    run.update()
    return run


def finish_run(run: Run, status: str = "completed", **fields: Any) -> dict[str, Any]:
    """Record the end time, wall time and final ``status`` (``completed``, ``failed``, ``interrupted``)."""
    run.update(status=status, ended_at=_now(), wall_time_s=round(time.monotonic() - run._t0, 3), **fields)
    return run.manifest


@contextmanager
def run_context(name: str, *, discard_on_input_error: bool = False, **kwargs: Any) -> Iterator[Run]:
    """``start_run`` + ``finish_run`` around a block; failures and Ctrl-C are recorded, then re-raised.

    With ``discard_on_input_error``, a :class:`SafealignError` raised before the block wrote anything
    (bad input found while loading) leaves the folder as it was instead: a run directory this call
    created is removed, and an earlier manifest is put back byte for byte. Once the block has written
    an output, the failure is recorded as usual, so finished work is never thrown away.
    """
    run_dir = Path(kwargs.get("root") or runs_dir()) / name
    existed = run_dir.exists()
    old_manifest = (run_dir / MANIFEST).read_bytes() if (run_dir / MANIFEST).is_file() else None
    before = _contents(run_dir)
    run = start_run(name, **kwargs)
    try:
        yield run
    except SafealignError as exc:
        if not discard_on_input_error or _contents(run_dir) != before:
            finish_run(run, "failed", error=f"{type(exc).__name__}: {exc}")
        elif not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif old_manifest is None:
            (run_dir / MANIFEST).unlink(missing_ok=True)
        else:
            atomic_write_bytes(run_dir / MANIFEST, old_manifest)
        raise
    except KeyboardInterrupt:
        finish_run(run, "interrupted")
        raise
    except BaseException as exc:
        finish_run(run, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finish_run(run)


def _contents(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file in a run directory except its manifest."""
    if not run_dir.is_dir():
        return {}
    return {
        str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file() and p != run_dir / MANIFEST
    }


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` from a run directory, with a clear error when it is missing or corrupt."""
    import json

    path = Path(run_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SafealignError(f"{path}: no manifest here; is {run_dir} a safealign run directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafealignError(f"{path}: manifest is not valid JSON ({exc})") from exc
