"""Throughput of the scorers: texts per second, batched and one text at a time (a benchmark, not a test).

The record has the shared benchmark schema of :mod:`alignment.benchmark` (``make bench-reward`` writes it
to ``bench/results/reward.json``).
"""

from __future__ import annotations

from collections.abc import Callable
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


def benchmark(
    scorers: dict[str, Callable[[list[str]], Any]], n: int = 256, batch_size: int = 32, repeats: int = 3
) -> dict[str, Any]:
    """The ``reward`` benchmark record: texts/s of each scorer batched and one by one on the same ``n``
    texts (``repeats`` alternating rounds after one warm-up round), and the batched speed-up."""
    from alignment.benchmark import make_record, ratio, summarize, time_alternating

    texts = sample_texts(n)

    def run(score: Callable[[list[str]], Any], size: int) -> None:
        for i in range(0, len(texts), size):
            score(list(texts[i : i + size]))

    variants: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    for name, score in scorers.items():
        modes = {"batched": lambda s=score: run(s, batch_size), "one-by-one": lambda s=score: run(s, 1)}
        wall, _ = time_alternating(modes, repeats, warmup=1)
        speed = {mode: summarize([n / t for t in ts], 1) for mode, ts in wall.items()}
        variants.update({f"{name}/{mode}": s for mode, s in speed.items()})
        ratios[f"{name}: batched / one-by-one"] = ratio(speed["batched"], speed["one-by-one"], 2)
    return make_record(
        "reward",
        variants,
        n=repeats,
        unit="texts/s",
        ratios=ratios,
        params={"texts": n, "batch_size": batch_size, "scorers": list(scorers)},
    )
