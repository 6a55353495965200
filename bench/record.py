"""What every benchmark in ``bench/`` shares: machine and version record, alternating timing with warm-up,
median and spread, the JSON record under ``bench/results/<name>.json`` (written atomically) and a rich table.

A record has one schema for every benchmark::

    {"benchmark": name, "command": "...", "process_wall_s": s, "machine": {...}, "versions": {...}, "n": n,
     "unit": "s", "variants": {name: summary}, "ratios": {name: value}, "params": {...}, "details": {...}}

where ``summary`` is :func:`summarize` of the variant's repeated measurements.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench") / "results"
VERSION_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical cores, RAM (GiB), torch threads and platform of this machine."""
    import torch

    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(ram, 1) if ram else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def versions() -> dict[str, Any]:
    """Python, the training stack's package versions and safealign's git commit."""
    from alignment.runs import git_commit, package_versions

    return {**package_versions(("safealign", *VERSION_PACKAGES)), "safealign_commit": git_commit()}


def command_line() -> str:
    """The command that started this process, as a shell line."""
    return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def process_seconds() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, ValueError, IndexError):
        return None


def summarize(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median and spread of repeated measurements: min, max and the quartiles (inclusive method).

    >>> summarize([3.0, 1.0, 2.0, 10.0])
    {'n': 4, 'median': 2.5, 'min': 1.0, 'max': 10.0, 'q1': 1.75, 'q3': 4.75, 'values': [3.0, 1.0, 2.0, 10.0]}
    >>> summarize([2.0])["q1"]
    2.0
    """
    if not values:
        raise ValueError("no measurements to summarize")
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "q1": round(q1, digits),
        "q3": round(q3, digits),
        "values": [round(v, digits) for v in values],
    }


def ratio(numerator: Mapping[str, Any], denominator: Mapping[str, Any], digits: int = 3) -> float | None:
    """Ratio of two summaries' medians (None when either is missing or the denominator is zero).

    >>> ratio({"median": 3.0}, {"median": 2.0})
    1.5
    """
    a, b = numerator.get("median"), denominator.get("median")
    return round(a / b, digits) if a is not None and b else None


def time_alternating(
    variants: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each variant, ``repeats`` times, after ``warmup`` untimed rounds.

    The variants take turns, so a change in machine load hits all of them alike.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    return wall, cpu


def make_record(
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    n: int,
    unit: str = "s",
    ratios: Mapping[str, float | None] | None = None,
    params: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """The benchmark record: machine, versions, command, ``n``, per-variant summaries and ratios."""
    return {
        "benchmark": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or command_line(),
        "process_wall_s": process_seconds(),
        "machine": machine(),
        "versions": versions(),
        "n": n,
        "unit": unit,
        "variants": {k: dict(v) for k, v in variants.items()},
        "ratios": dict(ratios or {}),
        "params": dict(params or {}),
        "details": dict(details or {}),
    }


def results_path(name: str) -> Path:
    """``bench/results/<name>.json`` under the current directory (the repository root for ``make``)."""
    return RESULTS_DIR / f"{name}.json"


def write_record(record: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write the record as JSON (atomically) to ``path`` or :func:`results_path`; returns the path."""
    from alignment.io import atomic_write_json

    target = Path(path) if path else results_path(record["benchmark"])
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, dict(record))
    return target


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_record(record: Mapping[str, Any], title: str | None = None, console: Any = None) -> None:
    """A rich table: one row per variant (median, min-max, IQR, n), then the ratios."""
    from rich.table import Table

    if console is None:
        from alignment.console import out as console
    m = record["machine"]
    unit = record.get("unit", "s")
    caption = f"{m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GiB, torch threads {m['torch_threads']}"
    table = Table(title=title or record["benchmark"], caption=caption)
    table.add_column("variant", overflow="fold")
    for column in (f"median ({unit})", "min-max", "IQR", "n"):
        table.add_column(column, justify="right")
    for name, s in record["variants"].items():
        table.add_row(
            name,
            _number(s.get("median")),
            f"{_number(s.get('min'))}-{_number(s.get('max'))}",
            f"{_number(s.get('q1'))}-{_number(s.get('q3'))}",
            str(s.get("n", "")),
        )
    console.print(table)
    if record.get("ratios"):
        ratios = Table(title="ratios (of medians)")
        ratios.add_column("ratio")
        ratios.add_column("value", justify="right")
        for name, value in record["ratios"].items():
            ratios.add_row(name, _number(value))
        console.print(ratios)


def finish(record: Mapping[str, Any], path: str | Path | None = None, title: str | None = None) -> Path:
    """Print the record's table and write it; returns where it was written."""
    from alignment.console import out

    print_record(record, title=title)
    target = write_record(record, path)
    out.print(f"written to {target}")
    return target


def cli_main(main: Callable[[], int], name: str) -> int:
    """Run a benchmark's ``main`` as a command: bad input (a :class:`SafealignError`) prints one line
    ``bench.NAME: error: ...`` and gives its exit code (2) instead of a traceback."""
    from alignment.errors import SafealignError

    try:
        return main()
    except SafealignError as exc:
        print(f"bench.{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
