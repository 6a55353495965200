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
import errno
import fcntl
import getpass
import json
import os
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
LOCK_FILE = ".safealign.lock"  # present while a command writes the folder; names its holder
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
    kind: str | None = None,
) -> Run:
    """Open ``<root>/<name>/`` (created if needed) and write a manifest with status ``running``.

    ``kind`` (``eval``, ``pipeline``, ``train sft``, ...) is recorded so a later command can tell its own
    runs from other folders (:func:`claim_output_dir`). A previous manifest in the same directory is kept
    under ``previous_runs`` so resumed runs keep their history.
    """
    check_run_name(name)
    run_dir = Path(root or runs_dir()) / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafealignError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    previous = load_manifest(run_dir) if (run_dir / MANIFEST).exists() else None
    from alignment.device import describe_device

    manifest: dict[str, Any] = {
        "name": name,
        "kind": kind,
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
            "pid": os.getpid(),
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
def run_context(
    name: str,
    *,
    discard_on_input_error: bool = False,
    kind: str | None = None,
    force: bool = False,
    **kwargs: Any,
) -> Iterator[Run]:
    """``start_run`` + ``finish_run`` around a block; failures and Ctrl-C are recorded, then re-raised.

    With ``kind``, the folder is first claimed (:func:`claim_output_dir`: an existing folder must hold a
    run of that kind, unless ``force``) and locked for the block (:func:`lock_run_dir`).

    With ``discard_on_input_error``, a :class:`SafealignError` raised before the block wrote anything
    (bad input found while loading) leaves the folder as it was instead: a run directory this call
    created is removed, and an earlier manifest is put back byte for byte. Once the block has written
    an output, the failure is recorded as usual, so finished work is never thrown away.
    """
    check_run_name(name)
    run_dir = Path(kwargs.get("root") or runs_dir()) / name
    if kind is not None:
        claim_output_dir(run_dir, kind, force=force)
    existed = run_dir.exists()
    with lock_run_dir(run_dir):
        old_manifest = (run_dir / MANIFEST).read_bytes() if (run_dir / MANIFEST).is_file() else None
        before = _contents(run_dir)
        run = start_run(name, kind=kind, **kwargs)
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


def check_run_name(name: str) -> str:
    """A run directory's name: one path component of letters, digits, '.', '_' and '-'."""
    if not _NAME_RE.match(name):
        raise SafealignError(
            f"run name {name!r} is not valid: use letters, digits, '.', '_' and '-' (no slashes)"
        )
    return name


def _contents(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file in a run directory except its manifest and lock."""
    if not run_dir.is_dir():
        return {}
    return {
        str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != LOCK_FILE and p != run_dir / MANIFEST
    }


def manifest_kind(run_dir: Path) -> str | None:
    """The kind of run a folder's ``manifest.json`` records (older manifests: from their command line)."""
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if isinstance(manifest.get("kind"), str):
        return manifest["kind"]
    command = manifest.get("command")
    words = [command] if isinstance(command, str) else command if isinstance(command, list) else []
    for word in map(str, words[:3]):
        if word in ("eval", "pipeline", "train-stereotype"):
            return word
    return None


def claim_output_dir(path: str | Path, kind: str, *, force: bool = False) -> None:
    """Allow a command of ``kind`` to write into ``path``: a missing or empty folder, or one whose manifest
    says it holds a ``kind`` run; anything else (a file, a folder of other files, another kind of run) is
    refused unless ``force``, so no command ever replaces what it did not write."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise SafealignError(f"{path}: is a file, not a folder; choose another output folder")
    if not any(p.name != LOCK_FILE for p in path.iterdir()):
        return
    found = manifest_kind(path)
    if found == kind or force:
        return
    what = f"a {found!r} run" if found else f"files safealign did not write (no {MANIFEST} of a run)"
    raise SafealignError(
        f"{path} holds {what}, not a {kind!r} run: choose another folder, or pass --force to replace it"
    )


_HELD_LOCKS: dict[str, list[int]] = {}  # folder -> [lock file descriptor, depth] (re-entrant per process)


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def lock_run_dir(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run directory (``.safealign.lock``, naming the holder) for the block.

    A second command writing the same folder stops at once with one line naming the holder, instead of
    both finishing and one result being lost. The lock is an OS lock, so a killed holder releases it; the
    folder and the lock file are removed again if the block leaves the folder empty.
    """
    path = Path(path)
    key = os.path.abspath(path)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key][1] += 1
        try:
            yield path
        finally:
            _HELD_LOCKS[key][1] -= 1
        return
    existed = path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafealignError(f"cannot create run directory {path}: {exc.strerror}") from exc
    lock_path = path / LOCK_FILE
    try:
        fd = _acquire(lock_path, path)
    except BaseException:
        if not existed:
            with suppress(OSError):
                path.rmdir()
        raise
    _HELD_LOCKS[key] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD_LOCKS[key]
        with suppress(OSError):
            lock_path.unlink()
        os.close(fd)
        if not existed:
            with suppress(OSError):
                path.rmdir()  # only when the block left nothing in it


def _acquire(lock_path: Path, folder: Path) -> int:
    """Open and lock ``lock_path`` (retrying when its holder removed it meanwhile); write who holds it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise SafealignError(f"cannot lock {folder}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SafealignError(f"cannot lock {folder}: {exc.strerror}") from exc
            raise SafealignError(
                f"{folder} is in use by {_holder(lock_path)}: wait for it to finish, or choose another folder"
            ) from exc
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and lock: lock the new one
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": _now()}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
    return fd


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` from a run directory, with a clear error when it is missing or corrupt."""
    path = Path(run_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SafealignError(f"{path}: no manifest here; is {run_dir} a safealign run directory?") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafealignError(f"{path}: manifest is not valid JSON ({exc})") from exc
