"""HellaSwag: choose the right ending of four; acc (total log-likelihood) and acc_norm (per character)."""

from __future__ import annotations

import bz2
import json
from dataclasses import dataclass
from pathlib import Path

from alignment.errors import SafealignError, where
from alignment.evaluation.context import SuiteContext
from alignment.evaluation.results import Metric, SuiteOutput
from alignment.io import file_lines

RELATIVE = "hellaswag/hellaswag_val_full.txt.bz2"


@dataclass(frozen=True)
class HellaSwagItem:
    id: str
    activity: str
    context: str
    endings: tuple[str, str, str, str]
    label: int

    @property
    def query(self) -> str:
        return f"{self.activity}: {self.context}" if self.activity else self.context

    @property
    def gold_text(self) -> str:
        """The context with its correct ending: natural text for the perplexity suite."""
        return f"{self.context} {self.endings[self.label]}"


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".bz2":
            return bz2.decompress(path.read_bytes()).decode("utf-8")
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SafealignError(f"{path}: cannot read ({exc})") from exc


def load_hellaswag(path: Path) -> list[HellaSwagItem]:
    """Read the official JSONL (``ctx``, ``activity_label``, ``endings``, ``label``) or the 6-line text form
    (``activity: context``, the gold label, four endings)."""
    text = _read_text(path)
    name = path.name.removesuffix(".bz2")
    items = []
    if name.endswith(".jsonl"):
        for row, line in enumerate(file_lines(text), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                endings = tuple(rec["endings"])
                label = int(rec["label"])
                if len(endings) != 4 or label not in range(4) or not all(endings):
                    raise ValueError("needs 4 non-empty endings and a label 0-3")
                items.append(
                    HellaSwagItem(
                        str(rec.get("ind", row)), rec.get("activity_label", ""), rec["ctx"], endings, label
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise SafealignError(f"{where(path, row)}: not a HellaSwag record ({exc})") from exc
        return items
    lines = file_lines(text)
    if len(lines) % 6:
        raise SafealignError(f"{path}: {len(lines)} lines; the text form has 6 lines per item")
    for start in range(0, len(lines), 6):
        head, label, *endings = lines[start : start + 6]
        activity, sep, context = head.partition(": ")
        if not label.strip().isdigit() or int(label) not in range(4):
            raise SafealignError(f"{where(path, start + 2)}: gold label {label!r} is not 0-3")
        if not sep:
            activity, context = "", head
        if not all(e.strip() for e in endings):
            raise SafealignError(f"{where(path, start + 3)}: an ending is empty")
        items.append(
            HellaSwagItem(
                str(start // 6),
                activity.strip(),
                context.strip(),
                tuple(e.strip() for e in endings),
                int(label),
            )
        )
    return items


def pick(scores: list[float]) -> int:
    """Index of the highest score; the first one on a tie.

    >>> pick([-3.0, -1.0, -1.0, -2.0])
    1
    """
    return max(range(len(scores)), key=scores.__getitem__)


def per_character(lls: list[float], endings: tuple[str, ...]) -> list[float]:
    """Each log-likelihood divided by its ending's length in characters: the ending as written, without
    the space the request puts before it (lm-evaluation-harness's ``acc_norm``).

    >>> per_character([-6.0, -6.0], ("ab", "abcd"))
    [-3.0, -1.5]
    """
    return [ll / len(ending) for ll, ending in zip(lls, endings, strict=True)]


def run(ctx: SuiteContext) -> SuiteOutput:
    items = load_hellaswag(ctx.data_file(RELATIVE))
    items = ctx.select(items, key=lambda it: it.id)
    requests = [(it.query, " " + ending) for it in items for ending in it.endings]
    scored = ctx.loglikelihood(requests)
    acc, acc_norm, samples = [], [], []
    for i, it in enumerate(items):
        lls = [scored[4 * i + j].logprob for j in range(4)]
        acc.append(float(pick(lls) == it.label))
        acc_norm.append(float(pick(per_character(lls, it.endings)) == it.label))
        samples.append(
            {"id": it.id, "label": it.label, "logprobs": lls, "acc": acc[-1], "acc_norm": acc_norm[-1]}
        )
    return SuiteOutput(
        [Metric("acc", ctx.mean(acc, 100)), Metric("acc_norm", ctx.mean(acc_norm, 100))], samples
    )
