"""Peak memory of a whole process tree: ``python -m bench.tree_memory --out FILE.json -- COMMAND ...``.

The pipeline runs each step in its own process, so the kernel's ``ru_maxrss`` (the largest single
process) no longer says how much memory the job needed at once. This samples every process of the
command's tree from ``/proc`` every ``--interval`` seconds and records the largest sum of their
resident set sizes (and of their proportional set sizes, which count shared library pages once), the
largest single process, and the wall time. Linux only. Example::

    python -m bench.tree_memory --out bench/results/pipeline_tree.json -- make pipeline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alignment.io import atomic_write_json
from bench.record import cli_main


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def memory_mb(pid: int) -> tuple[float, float, str]:
    """(RSS, PSS) in MB and the command name of one process; zeros when it has gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0.0, 0.0, ""
    values = {line.split(":")[0]: line.split()[1] for line in rollup.splitlines()[1:] if ":" in line}
    return int(values.get("Rss", 0)) / 1024, int(values.get("Pss", 0)) / 1024, name[:160]


def watch(command: list[str], interval: float) -> dict[str, Any]:
    """Run ``command`` to its end, sampling its tree; returns the peaks, wall time and exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak_rss = peak_pss = 0.0
    biggest: dict[str, float] = {}
    samples = 0
    while proc.poll() is None:
        rss_sum = pss_sum = 0.0
        for pid in tree_pids(proc.pid):
            rss, pss, name = memory_mb(pid)
            rss_sum, pss_sum = rss_sum + rss, pss_sum + pss
            if name and rss > biggest.get(name, 0.0):
                biggest[name] = rss
        peak_rss, peak_pss = max(peak_rss, rss_sum), max(peak_pss, pss_sum)
        samples += 1
        time.sleep(interval)
    top = sorted(biggest.items(), key=lambda kv: -kv[1])[:8]
    return {
        "command": command,
        "returncode": proc.returncode,
        "wall_s": round(time.perf_counter() - start, 1),
        "interval_s": interval,
        "samples": samples,
        "peak_tree_rss_mb": round(peak_rss, 1),
        "peak_tree_pss_mb": round(peak_pss, 1),
        "peak_rss_by_process_mb": {name: round(mb, 1) for name, mb in top},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tree_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    record = watch(command, args.interval)
    atomic_write_json(args.out, record)
    print(json.dumps({k: v for k, v in record.items() if k != "peak_rss_by_process_mb"}), file=sys.stderr)
    return record["returncode"]


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "tree_memory"))
