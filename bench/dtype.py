"""What ``dtype: fast`` costs in fidelity and gains in time: the same held-out items evaluated with float32
weights and with bfloat16 weights, one after the other in one process.

``python -m bench.dtype --suites crows_pairs,hellaswag --limit 200`` writes ``bench/results/dtype.json``:
each dtype's wall time and headline values, and per suite the items whose decision differs between the two
(a CrowS-Pairs pair judged stereotyped in one and not the other, a HellaSwag item right in one and wrong in
the other). Needs ``SAFEALIGN_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.record import cli_main, finish, make_record, summarize

# The per-item field whose change is a changed decision, for each suite this benchmark compares.
DECISIONS = {
    "crows_pairs": ("stereotyped",),
    "stereoset": ("stereotype_preferred", "related_wins"),
    "hellaswag": ("acc", "acc_norm"),
    "truthfulqa_mc": ("mc1",),
    "bbq": ("pred",),
}


def run(
    model_spec: str, dtype: str, suites: list[str], limit: int, out: Path
) -> tuple[float, dict[str, Any]]:
    """Wall seconds and results of one evaluation with weights in ``dtype`` (samples written to ``out``)."""
    from alignment.evaluation import evaluate
    from alignment.models import load_model

    loaded = load_model(model_spec, dtype=dtype)
    start = time.perf_counter()
    results = evaluate(model_spec, suites, loaded=loaded, limit=limit, preset="pipeline", out_dir=out)
    return time.perf_counter() - start, results


def _samples(folder: Path, suite: str) -> dict[str, dict[str, Any]]:
    with (folder / "samples" / f"{suite}.jsonl").open(encoding="utf-8") as lines:
        return {row["id"]: row for row in map(json.loads, lines)}


def flips(a: Path, b: Path, suite: str) -> dict[str, int]:
    """How many items of ``suite`` each decision field differs on between two evaluations' samples."""
    left, right = _samples(a, suite), _samples(b, suite)
    counts = {"items": len(left)}
    for key in DECISIONS.get(suite, ()):
        counts[key] = sum(left[i].get(key) != right[i].get(key) for i in left if i in right)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dtype", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--suites", default="crows_pairs,hellaswag", help="comma-separated (%(default)s)")
    parser.add_argument("--limit", type=int, default=200, help="held-out items per suite (%(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--out", default=None, help="JSON record path (default: bench/results/dtype.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    suites = args.suites.split(",")
    walls, heads, samples = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            samples[dtype] = Path(tmp) / dtype
            walls[dtype], results = run(args.model, dtype, suites, args.limit, samples[dtype])
            heads[dtype] = {
                f"{m['suite']}/{m['metric']}": m["value"]
                for m in results["metrics"]
                if m.get("headline") and m.get("group") is None
            }
        changed = {s: flips(samples["float32"], samples["bfloat16"], s) for s in suites}
    record = make_record(
        "dtype",
        {dtype: summarize([wall]) for dtype, wall in walls.items()},
        n=1,
        ratios={"float32 / bfloat16 wall": round(walls["float32"] / walls["bfloat16"], 3)},
        params={"model": args.model, "suites": suites, "limit": args.limit, "split": "heldout"},
        details={"headline": heads, "changed_decisions": changed},
    )
    finish(record, args.out, title=f"float32 vs bfloat16 weights: {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "dtype"))
