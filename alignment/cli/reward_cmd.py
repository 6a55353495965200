"""``safealign reward list | score | train-stereotype``: the reward module from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from alignment.config import Once, add_dataclass_flags, config_from_args, parse_yaml
from alignment.console import err, out
from alignment.errors import SafealignError, where


def register(subparsers: argparse._SubParsersAction) -> None:
    from reward.stereotype.train import StereotypeTrainConfig

    parser = subparsers.add_parser(
        "reward", help="score text with reward functions; train the stereotype classifier"
    )
    sub = parser.add_subparsers(dest="reward_command", metavar="ACTION", required=True)

    lst = sub.add_parser("list", help="built-in and plugin reward names, transforms and toxicity scorers")
    lst.set_defaults(func=list_rewards)

    score = sub.add_parser(
        "score",
        help="score texts with a reward (a name, module:function, or a YAML composite)",
        description="Score texts with a reward. Texts come from --text (repeatable) or --file: a .jsonl with "
        "one object per line (field --field, optional 'prompt') or a .txt with one text per line.",
    )
    score.add_argument(
        "--reward", default="toxicity", help="reward name, 'pkg.mod:fn' or a YAML spec (default: %(default)s)"
    )
    score.add_argument(
        "--args",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="arguments for the reward, e.g. scorer=profanity",
    )
    score.add_argument("--text", action="append", default=[], help="a text to score (repeatable)")
    score.add_argument("--file", type=Path, help="a .jsonl or .txt file of texts")
    score.add_argument(
        "--field", default="text", help="the text field of a .jsonl file (default: %(default)s)"
    )
    score.add_argument("--out", type=Path, help="write the scores as JSONL here")
    score.set_defaults(func=score_texts)

    train = sub.add_parser(
        "train-stereotype",
        help="train the stereotype classifier on the train side of the grouped splits",
        description="Train the stereotype classifier. Precedence: defaults < --config YAML < flags.",
    )
    train.add_argument(
        "--config", type=Path, action=Once, metavar="FILE.yaml", help="YAML whose keys are the flags below"
    )
    add_dataclass_flags(train, StereotypeTrainConfig)
    train.set_defaults(func=train_stereotype_cmd)


# ---- actions ----


def list_rewards(args: argparse.Namespace) -> int:
    from reward.composite import TRANSFORMS
    from reward.registry import BUILTINS, ENTRY_POINT_GROUP, entry_points

    table = Table(title="Reward functions (use with --reward or in a YAML spec)")
    for column in ("name", "kind", "what it returns"):
        table.add_column(column)
    for name, builtin in BUILTINS.items():
        table.add_row(name, "built-in", builtin.help)
    for name, ep in sorted(entry_points().items()):
        table.add_row(name, f"plugin ({ENTRY_POINT_GROUP})", ep.value)
    out.print(table)
    out.print(
        f"Transforms: {', '.join(TRANSFORMS)}. Any function: 'package.module:function' or 'file.py:function'."
    )
    out.print("Toxicity scorers: auto, jigsaw-bilstm, detoxify:<variant or .ckpt>, hf:<model>, profanity")
    return 0


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SafealignError(f"--args {pair!r}: expected KEY=VALUE")
        values[key] = parse_yaml(value, f"--args {key}") if value else ""
    return values


def read_texts(path: Path, field: str) -> tuple[list[str], list[str]]:
    """(prompts, texts) from a .jsonl (``field`` and optional ``prompt``) or a .txt (one per line)."""
    from alignment.io import file_lines, read_text_file

    lines = file_lines(read_text_file(path))
    if path.suffix.lower() != ".jsonl":
        texts = [line for line in lines if line.strip()]
        return [""] * len(texts), texts
    prompts, texts = [], []
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SafealignError(f"{where(path, row)}: invalid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise SafealignError(f"{where(path, row, field)}: missing or not a string")
        texts.append(record[field])
        prompts.append(str(record.get("prompt") or ""))
    return prompts, texts


def score_texts(args: argparse.Namespace) -> int:
    from alignment.io import atomic_write_text
    from reward.composite import CompositeReward
    from reward.registry import build_reward

    prompts, texts = [""] * len(args.text), list(args.text)
    if args.file:
        more_prompts, more_texts = read_texts(args.file, args.field)
        prompts, texts = prompts + more_prompts, texts + more_texts
    if not texts:
        raise SafealignError("nothing to score: pass --text TEXT or --file FILE")
    reward_args = _parse_args(args.args)
    with err.status(f"loading {args.reward} ..."):
        if reward_args:
            fn = build_reward({"reward": args.reward, "args": reward_args})
        else:
            fn = build_reward(args.reward)
    with err.status(f"scoring {len(texts)} texts ..."):
        rewards = checked_scores(fn, prompts, texts)
    components = fn.last_components if isinstance(fn, CompositeReward) else {}
    table = Table(title=f"reward: {args.reward}")
    table.add_column("text", overflow="fold", max_width=60)
    table.add_column("reward", justify="right")
    for name in components:
        table.add_column(name, justify="right")
    for i, (text, value) in enumerate(zip(texts, rewards, strict=True)):
        table.add_row(text[:200], f"{value:.4f}", *(f"{components[n][i]:.4f}" for n in components))
    out.print(table)
    for line in _backends(fn):
        out.print(f"[dim]{line}[/]")
    if args.out:
        rows = [
            {"prompt": p, "text": t, "reward": r, **{n: components[n][i] for n in components}}
            for i, (p, t, r) in enumerate(zip(prompts, texts, rewards, strict=True))
        ]
        atomic_write_text(args.out, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
        err.print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def checked_scores(fn: Any, prompts: list[str], texts: list[str]) -> list[float]:
    """One finite score per text, or one line naming the reward: it raised or exited, returned
    non-numbers or the wrong count (:func:`alignment.rl.rollout.score_completions`), or NaN/inf."""
    import math

    from alignment.rl.rollout import RewardFailed, reward_label, score_completions

    try:
        scores = score_completions(fn, prompts, texts, [[] for _ in texts])
    except RewardFailed as exc:
        raise SafealignError(str(exc)) from exc
    bad = [i for i, value in enumerate(scores, start=1) if not math.isfinite(value)]
    if bad:
        raise SafealignError(
            f"reward {reward_label(fn)} returned NaN, inf or None for {len(bad)} of {len(texts)} texts "
            f"(first: text {bad[0]}); nothing written"
        )
    return scores


def _backends(fn: Any) -> list[str]:
    """One line per component that records where its scores come from (backend, model)."""
    parts = (
        fn.describe()["components"]
        if hasattr(fn, "describe")
        else [{"name": getattr(fn, "__name__", "reward"), "info": getattr(fn, "info", None)}]
    )
    lines = []
    for part in parts:
        info = part.get("info")
        if isinstance(info, dict):
            details = ", ".join(
                f"{k}={v}"
                for k, v in info.items()
                if k in ("backend", "label", "model", "requested", "reason")
            )
            lines.append(f"{part['name']}: {details}")
    return lines


MIN_ROWS_SHOWN = 30  # smaller bias-type subsets stay in metrics.json only


def train_stereotype_cmd(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from alignment.runs import claim_output_dir
    from reward.stereotype.train import KIND, StereotypeTrainConfig, train_stereotype

    config = config_from_args(StereotypeTrainConfig, args)
    claim_output_dir(config.out_dir, KIND, force=config.force)  # before the progress bar appears
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err,
    ) as bar:
        task = bar.add_task(f"training ({config.mode})", total=None)

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(
                task, completed=step, total=total, description=f"training ({config.mode}) loss {loss:.3f}"
            )

        metrics = train_stereotype(config, progress=progress)
    table = Table(
        title=f"Stereotype classifier, held-out split ({metrics['split']['test_examples']} sentences)",
        box=box.SIMPLE_HEAD,
        caption="F1: macro-F1 over the labels present; CI: 95% bootstrap over groups; pairs: stereotype "
        "sentence scored above its anti-stereotype. Bias types with n >= "
        f"{MIN_ROWS_SHOWN} (all in metrics.json)",
    )
    table.add_column("subset", overflow="fold", min_width=18)
    for column in ("n", "acc", "F1", "F1 CI", "AUC", "ECE", "pairs"):
        table.add_column(column, justify="right")

    def row(name: str, m: dict[str, Any]) -> None:
        ci = m.get("macro_f1_ci95")
        table.add_row(
            name,
            str(m.get("n", 0)),
            _fmt(m.get("accuracy")),
            _fmt(m.get("macro_f1")),
            f"{ci['low']:.2f}-{ci['high']:.2f}" if ci else "",
            _fmt(m.get("roc_auc")),
            _fmt(m.get("ece")),
            _fmt(m.get("pair_accuracy")),
        )

    row("all", metrics["overall"])
    for source, m in metrics["by_source"].items():
        row(source, m)
    for name, m in metrics["by_bias_type"].items():
        if m.get("n", 0) >= MIN_ROWS_SHOWN:
            row(f"  {name}", m)
    out.print(table)
    out.print(f"saved to {config.out_dir} (metrics.json, manifest.json, split.json)")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ""
