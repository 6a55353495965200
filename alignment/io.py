"""Atomic file and directory writes, and content hashes.

Every output safealign writes goes through these helpers: the data lands under a temporary name in
the same directory and is renamed into place, so a crash or a full disk never leaves a half-written
file where a finished one is expected, and an existing output stays intact until its replacement is
complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError

# Write failures the user can act on (free space, fix permissions): one clear line, not a traceback.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
# Write failures caused by the path itself (a file where a folder belongs, a symlink loop, ...).
_PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EEXIST})
_WRITE_ERRNOS = _DISK_ERRNOS | _PATH_ERRNOS


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk: an ``OSError`` with ``ENOSPC``, or a library's own error that
    reports one in its message (safetensors raises ``SafetensorError`` with the OS text).

    >>> out_of_space(OSError(errno.ENOSPC, "No space left on device", "model.safetensors"))
    True
    >>> out_of_space(RuntimeError("I/O error: No space left on device (os error 28)"))
    True
    >>> out_of_space(OSError(errno.ENOENT, "No such file or directory"))
    False
    """
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return os.strerror(errno.ENOSPC) in str(exc)


def _write_failed(path: Path, exc: OSError) -> SafealignError:
    reason = exc.strerror or type(exc).__name__
    remedy = (
        "free some space or fix the permissions and run again"
        if exc.errno in _DISK_ERRNOS
        else "choose another output path"
    )
    error = SafealignError(f"cannot write {path}: {reason}; {remedy} (the previous output is unchanged)")
    error.os_error = exc  # an enclosing atomic_dir names its own (final) path instead of a temporary one
    return error


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_regular_file(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file; a missing, unreadable or non-regular one (a folder, a FIFO, a device,
    a symlink loop) is one line naming ``path`` instead of a traceback or a read that never returns."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without a writer
    except FileNotFoundError as exc:
        raise SafealignError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise SafealignError(f"{path}: is a directory, not a {what}") from exc
    except OSError as exc:
        raise SafealignError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
            raise SafealignError(f"{path}: is {kind}, not a {what}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return handle.read()
    except OSError as exc:
        raise SafealignError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    finally:
        if fd >= 0:
            os.close(fd)


def file_lines(text: str, keepends: bool = False) -> list[str]:
    """The lines of a text file's content as a file reader sees them: split at ``\\n``, ``\\r\\n`` or
    ``\\r`` only, never at the Unicode separators (U+2028, U+2029, U+0085, form feed) that
    ``str.splitlines`` also splits at, which are valid characters inside a JSONL or CSV text.

    >>> file_lines('{"t": "a\\u2028b"}\\r\\n{"t": "c"}\\n')
    ['{"t": "a\\u2028b"}', '{"t": "c"}']
    """
    lines = list(io.StringIO(text, newline=""))
    return lines if keepends else [line.rstrip("\r\n") for line in lines]


def read_text_file(path: str | os.PathLike, what: str = "file") -> str:
    """A regular UTF-8 text file (see :func:`read_regular_file`); bytes that are not UTF-8 are one line."""
    data = read_regular_file(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafealignError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from exc


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, rename)."""
    path = Path(path)
    if path.is_dir():
        raise SafealignError(f"cannot write {path}: it is a directory; choose a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from exc
        raise
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the user's umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; non-JSON values are written with ``str``."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` only when the block succeeds.

    Use it for outputs written by libraries that take a directory (``save_pretrained``,
    ``Dataset.save_to_disk``). An existing ``path`` is replaced only after the new one is complete;
    if the block raises, the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SafealignError(f"cannot write {path}: a file is in the way of this folder; choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; follow the user's umask
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_failed(path, exc) from exc
        raise
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the previous output back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = getattr(exc, "os_error", exc)
        if not isinstance(cause, OSError) and out_of_space(cause):  # a library's write error
            cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
            raise _write_failed(path, cause) from exc
        raise


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of a JSON-serialisable object in canonical form (sorted keys): a config hash."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_json_object(path: Path, fix: str = "") -> dict[str, Any]:
    """A JSON object read from ``path``, or one clear error naming the file (``fix`` says what to do)."""
    hint = f"; {fix}" if fix else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SafealignError(f"{path}: not found{hint}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafealignError(f"{path}: not valid JSON ({exc}){hint}") from exc
    if not isinstance(data, dict):
        raise SafealignError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
