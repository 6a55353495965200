"""Run one ``safealign`` command in a fresh Python process, as the pipeline does for every heavy step.

A process that trained a model keeps the allocator's high-water mark until it exits, so a job that trains
and evaluates several models in one process holds the largest step's memory plus fragmentation to the end.
A child per step returns all of it to the system when the step ends. The child's stdout goes straight to
ours; its stderr (progress, warnings) is passed through as it arrives while its ``safealign: error:`` line
is kept, so a failing step fails the caller with that same line.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError

ERROR_PREFIX = b"safealign: error: "
_TAIL_BYTES = 65536  # enough stderr to find the error line after any progress output
_LIVE: set[subprocess.Popen] = set()  # children running now, from any thread


class StepFailed(SafealignError):
    """A child step crashed (not an input error): its traceback is above; exit code 1."""

    exit_code = 1


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGKILL when the parent dies, so a killed pipeline leaves no
    orphan writing into the run directory (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_env(threads: int, terminal: bool = True) -> dict[str, str]:
    """Our environment with the step's thread count, and rich told to draw progress when the child writes
    to our terminal (its stderr is a pipe to us, which it would otherwise take for a log file)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if terminal and sys.stderr.isatty():
        env.setdefault("FORCE_COLOR", "1")
        env.setdefault("TTY_COMPATIBLE", "1")
        env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    return env


def error_line(tail: bytes) -> str | None:
    """The message of the last ``safealign: error:`` line in a stderr tail, if any.

    >>> error_line(b"progress\\rsafealign: error: data.csv, row 3: empty text\\n")
    'data.csv, row 3: empty text'
    """
    for line in reversed(tail.replace(b"\r", b"\n").splitlines()):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :].decode("utf-8", "replace").strip()
    return None


def _pump(stream: Any, tail: bytearray, sink: Any) -> None:
    """Copy a child's stderr to ``sink`` (a binary file, or None for our stderr) as it arrives, keeping its
    last bytes in ``tail``."""
    sink = sink or getattr(sys.stderr, "buffer", None)
    while chunk := os.read(stream.fileno(), 8192):
        tail.extend(chunk)
        del tail[:-_TAIL_BYTES]
        if sink is not None:
            sink.write(chunk)
            sink.flush()
        else:
            sys.stderr.write(chunk.decode("utf-8", "replace"))


def run_safealign(args: Sequence[str], what: str, threads: int, log: Path | None = None) -> None:
    """``python -m alignment ARGS`` with ``threads`` torch threads; raises on failure.

    With ``log``, the child's stdout and stderr go to that file instead of ours (a step running beside
    another keeps the terminal readable). A ``SafealignError`` in the child becomes one here with the same
    message prefixed by ``what``; a crash becomes :class:`StepFailed`; an interrupted child (Ctrl-C,
    SIGTERM) becomes ``KeyboardInterrupt``. When this process is interrupted, the child gets a few seconds
    to stop on its own (Ctrl-C reaches the whole process group), then SIGTERM, which it unwinds from the
    same way.
    """
    command = [sys.executable, "-m", "alignment", *map(str, args)]
    sink = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = log.open("wb")
    try:
        _run_child(command, what, threads, sink)
    finally:
        if sink is not None:
            sink.close()


def _run_child(command: list[str], what: str, threads: int, sink: Any) -> None:
    """Run ``command`` (see :func:`run_safealign`), its output to ``sink`` or ours."""
    proc = subprocess.Popen(
        command,
        stdout=sink,
        stderr=subprocess.PIPE,
        env=child_env(threads, terminal=sink is None),
        preexec_fn=_die_with_parent,
    )
    _LIVE.add(proc)
    tail = bytearray()
    reader = threading.Thread(target=_pump, args=(proc.stderr, tail, sink), daemon=True)
    reader.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        raise
    finally:
        _LIVE.discard(proc)
        reader.join(timeout=10)
        proc.stderr.close()
    if code == 0:
        return
    if code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise KeyboardInterrupt
    message = error_line(bytes(tail))
    if message is not None:
        raise SafealignError(f"{what}: {message}")
    if code < 0:
        raise StepFailed(
            f"{what}: the step's process was killed by signal {-code}"
            + (" (out of memory?)" if -code == signal.SIGKILL else "")
        )
    where = f"in {sink.name}" if sink is not None else "above"
    raise StepFailed(f"{what}: the step's process failed with exit code {code} (its output is {where})")


def stop_children() -> None:
    """SIGTERM every step still running (one started from another thread, which a Ctrl-C sent only to this
    process would not reach); each unwinds as from Ctrl-C."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.terminate()
