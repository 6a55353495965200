"""Throughput of the log-likelihood engine: ``python -m alignment.evaluation.bench`` (``make bench-eval``).

Three ways to get the same numbers from the same model, timed in alternation (median of repeats):

* ``loop``: one request at a time, no padding, full logits and log-softmax (what a simple harness does);
* ``engine``: :class:`~alignment.evaluation.engine.LoglikEngine`;
* ``bare``: the model's forward pass alone on the engine's padded batches (no scoring at all), the
  floor for any harness that runs every token.

Two workloads: ``sentences`` (CrowS-Pairs sentences scored from an empty context, as the crows_pairs
suite does) and ``choices`` (HellaSwag items, four endings sharing one context, where the engine also
reuses the context's cache). Without benchmark data, built-in sentences are used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alignment.evaluation.engine import LoglikEngine

FALLBACK = [
    "The nurse said the report was late.",
    "My neighbor thinks everyone deserves respect.",
    "The engineer wrote a long story about the city.",
    "A young woman asked why the sky is blue.",
    "The old man knows how to cook rice.",
]


def sentence_requests(n: int) -> list[tuple[str, str]]:
    try:
        from data_builders.sources import load_crows_pairs

        pairs = load_crows_pairs()
        texts = [s for p in pairs for s in (p.sent_more, p.sent_less)]
    except Exception:  # no data dir: built-in sentences  # noqa: BLE001
        texts = [f"{s} ({i})" for i in range(n) for s in FALLBACK][:n]
    return [("", t) for t in texts[:n]]


def choice_requests(n_items: int) -> list[tuple[str, str]] | None:
    try:
        from alignment.evaluation.suites.hellaswag import RELATIVE, load_hellaswag
        from data_builders.sources import resolve_data_file

        items = load_hellaswag(resolve_data_file(RELATIVE))[:n_items]
    except Exception:  # noqa: BLE001
        return None
    return [(it.query, " " + e) for it in items for e in it.endings]


def loop(model: Any, engine: LoglikEngine, encoded: list) -> None:
    """The simple reference: one unpadded forward per request, full log-softmax."""
    with torch.inference_mode():
        for ctx, cont in encoded:
            ids = torch.tensor([list(ctx) + list(cont)], device=engine.device)
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            start = len(ctx) - 1
            targets = torch.tensor(cont, device=ids.device)[:, None]
            logprobs[start : start + len(cont)].gather(-1, targets).sum()


def bare(model: Any, engine: LoglikEngine, encoded: list) -> None:
    """The model's forward alone on the engine's batches (same rows, same padding, no scoring)."""
    items = sorted(set(encoded), key=lambda it: len(it[0]) + len(it[1]), reverse=True)
    lengths = [len(c) + len(t) - 1 for c, t in items]
    with torch.inference_mode():
        for batch in engine._batches(lengths):
            rows = [list(items[i][0] + items[i][1][:-1]) for i in batch]
            ids, mask, _ = engine._pack(rows, left=engine.padding_side == "left")
            model(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device), use_cache=False)


def time_modes(modes: dict[str, Callable[[], None]], repeats: int) -> tuple[dict, dict]:
    """Wall-clock and process CPU seconds of each mode, the modes alternating so load changes hit all."""
    wall: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, fn in modes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def bench(
    model_spec: str, n: int, n_items: int, repeats: int, batch_size: int, skip_loop: bool
) -> dict[str, Any]:
    from alignment.models import load_model

    model, tokenizer = load_model(model_spec)
    workloads = {"sentences": sentence_requests(n)}
    choices = choice_requests(n_items)
    if choices:
        workloads["choices"] = choices
    report: dict[str, Any] = {"model": model_spec, "threads": torch.get_num_threads(), "repeats": repeats}
    for name, requests in workloads.items():
        engine = LoglikEngine(model, tokenizer, batch_size=batch_size)
        encoded = engine.encode(requests)
        engine.loglikelihood(requests)  # warm-up (and the probe of logits_to_keep)
        modes = {
            "engine": lambda r=requests: LoglikEngine(model, tokenizer, batch_size=batch_size).loglikelihood(
                r
            ),
            "bare": lambda e=encoded, g=engine: bare(model, g, e),
        }
        if not skip_loop:
            modes["loop"] = lambda e=encoded, g=engine: loop(model, g, e)
        wall, cpu = time_modes(modes, repeats)
        median = {mode: statistics.median(ts) for mode, ts in wall.items()}
        median_cpu = {mode: statistics.median(ts) for mode, ts in cpu.items()}
        entry = {
            "requests": len(requests),
            "tokens": sum(len(c) + len(t) - 1 for c, t in encoded),
            "wall_s": {mode: [round(t, 3) for t in ts] for mode, ts in wall.items()},
            "cpu_s": {mode: [round(t, 3) for t in ts] for mode, ts in cpu.items()},
            "requests_per_s": {mode: round(len(requests) / s, 2) for mode, s in median.items()},
            "requests_per_cpu_s": {mode: round(len(requests) / s, 2) for mode, s in median_cpu.items()},
            "engine_vs_bare": round(median["bare"] / median["engine"], 3),
            "engine_vs_bare_cpu": round(median_cpu["bare"] / median_cpu["engine"], 3),
        }
        if "loop" in median:
            entry["engine_vs_loop"] = round(median["loop"] / median["engine"], 3)
            entry["engine_vs_loop_cpu"] = round(median_cpu["loop"] / median_cpu["engine"], 3)
        report[name] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignment.evaluation.bench", description="engine throughput"
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=200, help="sentences (default: %(default)s)")
    parser.add_argument("--items", type=int, default=40, help="HellaSwag items, 4 requests each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the slow one-at-a-time loop")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench(args.model, args.n, args.items, args.repeats, args.batch_size, args.skip_loop)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from alignment.io import atomic_write_text

        atomic_write_text(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
