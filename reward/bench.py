"""Throughput of the scorers: texts per second, batched and one text at a time (a benchmark, not a test)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

SENTENCES = (
    "Thanks for the detailed answer, it really helped me understand the problem.",
    "You are an absolute idiot and nobody wants you here.",
    "The committee will meet again next Thursday to review the budget proposal.",
    "I can't believe how stupid this whole argument is, shut up already.",
    "She moved to the city last year and started working as a nurse.",
    "People from that country are all lazy and dishonest.",
    "Could you please send me the slides from this morning's talk?",
    "What a wonderful surprise, I had no idea you were coming!",
)


def sample_texts(n: int) -> list[str]:
    """``n`` texts: the real-toxicity prompt sample when the data dir has it, else a fixed mix.

    >>> len(sample_texts(5)) == 5
    True
    """
    try:
        from data_builders.sources import load_prompt_pool

        pool = [r.text for r in load_prompt_pool("rtp")]
    except Exception:  # no data dir: the benchmark still runs on the built-in sentences
        pool = list(SENTENCES)
    return [pool[i % len(pool)] for i in range(n)]


def measure(score: Callable[[list[str]], Any], texts: Sequence[str], batch_size: int) -> dict[str, float]:
    """Seconds and texts/s for scoring ``texts`` in batches of ``batch_size`` (after one warm-up call)."""
    score(list(texts[:1]))
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        score(list(texts[i : i + batch_size]))
    seconds = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1),
    }


def benchmark(
    scorers: dict[str, Callable[[list[str]], Any]], n: int = 256, batch_size: int = 32
) -> list[dict]:
    """One row per scorer: batched and one-by-one throughput on the same ``n`` texts."""
    texts = sample_texts(n)
    rows = []
    for name, score in scorers.items():
        batched = measure(score, texts, batch_size)
        single = measure(score, texts, 1)
        rows.append(
            {
                "scorer": name,
                "texts": n,
                "batched_texts_per_s": batched["texts_per_s"],
                "single_texts_per_s": single["texts_per_s"],
                "speedup": round(batched["texts_per_s"] / single["texts_per_s"], 2),
                "batch_size": batch_size,
            }
        )
    return rows
