"""Find a data file: an explicit path, else ``$SAFEALIGN_DATA_DIR/<relative>``, else a checked download.

Downloads come from the pinned official locations in ``registry.yaml`` and land in
``<cache>/data/<relative>`` only after their sha256 matches, so a truncated or altered file is never
used. Offline (``SAFEALIGN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) nothing is downloaded and a missing
file is one clear error saying where to put it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from alignment.errors import SafealignError
from alignment.io import atomic_write_bytes, sha256_file
from alignment.paths import cache_dir, data_dir, is_offline

DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class KnownFile:
    """A file safealign knows how to fetch: pinned URL, expected sha256 and license."""

    relative: str
    url: str
    sha256: str
    license: str


@functools.cache
def known_files() -> dict[str, KnownFile]:
    """The download registry (``registry.yaml``), keyed by path relative to the data dir."""
    text = resources.files("data_builders.sources").joinpath("registry.yaml").read_text(encoding="utf-8")
    entries = yaml.safe_load(text)["files"]
    return {rel: KnownFile(relative=rel, **entry) for rel, entry in entries.items()}


def downloads_disabled() -> bool:
    """True when data must not be fetched (``SAFEALIGN_OFFLINE`` or the hub's offline variables)."""
    flag = os.environ.get("SAFEALIGN_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or is_offline()


def data_cache_dir() -> Path:
    """Where downloaded data files live: ``<SAFEALIGN_CACHE>/data``."""
    return cache_dir() / "data"


def resolve_data_file(relative: str, path: str | os.PathLike | None = None) -> Path:
    """Return a readable local file for ``relative`` (a path like ``crows_pairs/crows_pairs_anonymized.csv``).

    Order: ``path`` when given (it must exist), ``$SAFEALIGN_DATA_DIR/relative``, a cached download,
    a fresh download with a sha256 check. Raises :class:`SafealignError` naming what was tried.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if explicit.exists() and not explicit.is_dir() and not explicit.is_file():
            raise SafealignError(f"{explicit}: not a regular file (a FIFO, socket or device)")
        if not explicit.is_file():
            raise SafealignError(f"{explicit}: file not found (given explicitly)")
        return explicit
    tried = []
    root = data_dir()
    if root is not None:
        candidate = root / relative
        if candidate.is_file():
            return candidate
        tried.append(f"{candidate} (SAFEALIGN_DATA_DIR)")
    else:
        tried.append("SAFEALIGN_DATA_DIR (unset)")
    known = known_files().get(relative)
    if known is None:
        raise SafealignError(
            f"{relative}: not found; tried {', '.join(tried)}; safealign has no download for it, "
            "so pass its path explicitly"
        )
    cached = data_cache_dir() / relative
    if cached.is_file() and sha256_file(cached) == known.sha256:
        return cached
    tried.append(f"{cached} (cache)")
    if downloads_disabled():
        raise SafealignError(
            f"{relative}: not found; tried {', '.join(tried)}; downloads are off (offline mode): "
            f"set SAFEALIGN_DATA_DIR to a folder holding {relative}, or fetch {known.url} into {cached}"
        )
    return download(known, cached)


def download(known: KnownFile, target: Path) -> Path:
    """Fetch ``known.url`` into ``target`` atomically, refusing content whose sha256 does not match."""
    try:
        with urllib.request.urlopen(known.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SafealignError(
            f"{known.relative}: download from {known.url} failed ({reason}); if this machine is offline, "
            f"set SAFEALIGN_DATA_DIR to a folder holding {known.relative}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != known.sha256:
        raise SafealignError(
            f"{known.relative}: downloaded file from {known.url} has sha256 {digest}, "
            f"expected {known.sha256}; not used (the upstream file changed or the download was altered)"
        )
    return atomic_write_bytes(target, data)
