"""Throughput of the log-likelihood engine: ``python -m bench.eval`` (``make bench-eval``).

Three ways to get the same numbers from the same model, timed in alternation after one warm-up round
(median and spread of repeats; the record goes to ``bench/results/eval.json``):

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
from typing import Any

import torch

from alignment.evaluation.engine import LoglikEngine
from bench.record import cli_main, finish, make_record, ratio, summarize, time_alternating

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
        for batch in engine.batches(lengths):
            rows = [list(items[i][0] + items[i][1][:-1]) for i in batch]
            ids, mask, _ = engine.pack(rows, left=engine.padding_side == "left")
            model(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device), use_cache=False)


def bench(
    model_spec: str, n: int, n_items: int, repeats: int, batch_size: int, skip_loop: bool
) -> dict[str, Any]:
    """The ``eval`` benchmark record: requests/s of each mode per workload, and the speed ratios."""
    from alignment.models import load_model

    model, tokenizer = load_model(model_spec)
    workloads = {"sentences": sentence_requests(n)}
    choices = choice_requests(n_items)
    if choices:
        workloads["choices"] = choices
    variants: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    for name, requests in workloads.items():
        engine = LoglikEngine(model, tokenizer, batch_size=batch_size)
        encoded = engine.encode(requests)
        modes = {
            "engine": lambda r=requests: LoglikEngine(model, tokenizer, batch_size=batch_size).loglikelihood(
                r
            ),
            "bare": lambda e=encoded, g=engine: bare(model, g, e),
        }
        if not skip_loop:
            modes["loop"] = lambda e=encoded, g=engine: loop(model, g, e)
        # one untimed round: warms the caches and the engine's probe of logits_to_keep
        wall, cpu = time_alternating(modes, repeats, warmup=1)
        speed = {mode: summarize([len(requests) / t for t in ts], 2) for mode, ts in wall.items()}
        cpu_speed = {mode: summarize([len(requests) / t for t in ts], 2) for mode, ts in cpu.items()}
        variants.update({f"{name}/{mode}": s for mode, s in speed.items()})
        ratios[f"{name}: engine / bare"] = ratio(speed["engine"], speed["bare"])
        ratios[f"{name}: engine / bare (cpu time)"] = ratio(cpu_speed["engine"], cpu_speed["bare"])
        if "loop" in speed:
            ratios[f"{name}: engine / loop"] = ratio(speed["engine"], speed["loop"])
            ratios[f"{name}: engine / loop (cpu time)"] = ratio(cpu_speed["engine"], cpu_speed["loop"])
        details[name] = {
            "requests": len(requests),
            "tokens": sum(len(c) + len(t) - 1 for c, t in encoded),
            "requests_per_cpu_s": cpu_speed,
        }
    return make_record(
        "eval",
        variants,
        n=repeats,
        unit="requests/s",
        ratios=ratios,
        params={"model": model_spec, "n": n, "items": n_items, "batch_size": batch_size},
        details=details,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description="engine throughput")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=200, help="sentences (default: %(default)s)")
    parser.add_argument("--items", type=int, default=40, help="HellaSwag items, 4 requests each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the slow one-at-a-time loop")
    parser.add_argument("--out", default=None, help="JSON record path (default: bench/results/eval.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = bench(args.model, args.n, args.items, args.repeats, args.batch_size, args.skip_loop)
    finish(record, args.out, title=f"Log-likelihood engine throughput: {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "eval"))
