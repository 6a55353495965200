"""Throughput of the scorers: texts per second, batched and one text at a time: ``python -m bench.reward``
(``make bench-reward``).

Each toxicity scorer, and the stereotype classifier when one is trained, scores the same texts in batches
and one by one, in alternation after a warm-up round. The record goes to ``bench/results/reward.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.record import cli_main, finish, make_record, ratio, summarize, time_alternating

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


def load_scorers(specs: str, stereotype_model: Path | None) -> dict[str, Callable[[list[str]], Any]]:
    """The comma-separated toxicity scorers, named by spec (and backend when it differs), plus the
    stereotype classifier from ``stereotype_model`` or, when none is given, the cache's if it is trained."""
    from reward.stereotype import StereotypeClassifier, default_model_dir
    from reward.toxicity import load_scorer

    scorers: dict[str, Callable[[list[str]], Any]] = {}
    for spec in [s.strip() for s in specs.split(",") if s.strip()]:
        scorer = load_scorer(spec)
        scorers[scorer.name if scorer.name == spec else f"{spec} ({scorer.name})"] = scorer.score
    if stereotype_model is None and (default_model_dir() / "classifier.json").is_file():
        stereotype_model = default_model_dir()
    if stereotype_model is not None:
        scorers["stereotype-classifier"] = StereotypeClassifier.load(stereotype_model).predict_proba
    return scorers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reward", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scorers", default="jigsaw-bilstm,profanity", help="comma-separated specs (default: %(default)s)"
    )
    parser.add_argument(
        "--stereotype-model",
        type=Path,
        help="also time this stereotype classifier (default: the cache's, if trained)",
    )
    parser.add_argument("-n", type=int, default=256, help="texts per measurement (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds per scorer (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, help="JSON record path (default: bench/results/reward.json)")
    args = parser.parse_args(argv)
    from alignment.console import err

    with err.status("loading scorers ..."):
        scorers = load_scorers(args.scorers, args.stereotype_model)
    with err.status(f"timing {len(scorers)} scorers on {args.n} texts ..."):
        record = benchmark(scorers, n=args.n, batch_size=args.batch_size, repeats=args.repeats)
    finish(record, args.out, title=f"Scorer throughput ({args.n} texts, batch size {args.batch_size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main, "reward"))
