"""SFT and preference rows from CrowS-Pairs and from rewrite pairs (TRL's column formats)."""

from __future__ import annotations

import re
from pathlib import Path

from data_builders.builders.config import BuildConfig
from data_builders.builders.core import UNSPECIFIED, Built, Example, SourceFile, merge_duplicates
from data_builders.neutral import neutral_rewrite
from data_builders.sources import load_crows_pairs, load_rewrite_pairs
from data_builders.sources.crows_pairs import RELATIVE as CROWS_RELATIVE
from data_builders.sources.readers import BadRow, BadRows
from data_builders.sources.resolve import known_files, resolve_data_file
from data_builders.sources.rewrite_pairs import RELATIVE as REWRITE_RELATIVE
from data_builders.text import normalize_text

CROWS_LICENSE_NOTE = (
    "CrowS-Pairs is CC BY-SA 4.0, so this derived dataset is too. Its data statement says it was made to "
    "measure bias and should not be used to train models; sentences here are offensive by design. Train on "
    "it "
    "only for research into debiasing, keep the test split for evaluation, and expect the evaluation on "
    "CrowS-Pairs to be optimistic for a model trained on its train split (same writers, same templates)."
)
STRATEGY_NOTES = {
    "parity": (
        "Strategy parity (the default): every pair appears twice, once preferring each sentence (column "
        "orientation), so any DPO-style loss is minimised by indifference between the stereotyped and the "
        "anti-stereotyped sentence (the same optimum as one orientation with label smoothing 0.5). It is the "
        "strategy least likely to introduce reverse bias: it never rewards the anti-stereotype, which is "
        "what "
        "less_over_more does and which earlier work found just flips the bias. Caveat: with a reference "
        "model, "
        "DPO's indifference is relative to the reference (the optimum keeps the reference's likelihood "
        "gap), so "
        "parity pairs anchor rather than remove an existing preference; use them with a reference-free "
        "objective, or choose neutral_over_more to push the stereotype down."
    ),
    "neutral_over_more": (
        "Strategy neutral_over_more: chosen is a neutral rewrite of the stereotyped sentence (the group "
        "mention "
        "replaced by a neutral one, derived from the word diff of the pair), rejected is the stereotyped "
        "sentence. It never prefers a statement about the contrasting group, so it does not teach the "
        "reversed stereotype, but pushed far it can lower the likelihood of any mention of the group. Pairs "
        "without a clean neutral rewrite are skipped (see counts)."
    ),
    "less_over_more": (
        "Strategy less_over_more: chosen is sent_less, rejected is sent_more, in both directions "
        "(sent_more is "
        "always the more stereotypical sentence). This rewards the anti-stereotype and tends to flip the "
        "bias "
        "rather than remove it; it is here for comparison with earlier work, not as a recommendation."
    ),
}


def _messages(config: BuildConfig, text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": config.system_prompt},
        {"role": "user", "content": config.instruction.replace("{text}", text)},
    ]


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _license(relative: str, path: str | None, default: str = "user-provided file") -> str:
    known = known_files().get(relative)
    return known.license if known and path is None else default


def split_common_prefix(a: str, b: str) -> tuple[str, str, str]:
    """Split two sentences into their shared word prefix and the two remainders.

    The cut falls before the first differing word; the remainders keep their leading space so that
    ``prefix + rest`` gives back each sentence.

    >>> split_common_prefix("Most black kids are poor.", "Most white kids are poor.")
    ('Most', ' black kids are poor.', ' white kids are poor.')
    >>> split_common_prefix("He ran.", "She ran.")
    ('', 'He ran.', 'She ran.')
    >>> split_common_prefix("He ran fast.", "He ran.")
    ('He', ' ran fast.', ' ran.')
    """
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    if n == len(a) == len(b):
        return a, "", ""
    cut = max((m.start() for m in re.finditer(r"\s", a[:n])), default=0)
    if all(n == len(t) or t[n].isspace() for t in (a, b)):  # both words end where they start to differ
        cut = n
    return a[:cut], a[cut:], b[cut:]


# ---------------------------------------------------------------- CrowS-Pairs


def _crows(config: BuildConfig) -> tuple[list, Built]:
    bad: list[BadRow] = []
    log = BadRows(config.on_bad_row, bad)
    file = Path(resolve_data_file(CROWS_RELATIVE, config.path))
    pairs = load_crows_pairs(file, on_bad_row=config.on_bad_row, bad_rows=bad)
    source = SourceFile.of("crows_pairs", file, len(pairs) + len(bad), _license(CROWS_RELATIVE, config.path))
    unique, merged = merge_duplicates(
        pairs,
        key=lambda p: (normalize_text(p.sent_more), normalize_text(p.sent_less)),
        labels=lambda p: (p.direction, p.bias_type),
        where=lambda p: (str(file), p.row, "stereo_antistereo"),
        log=log,
    )
    built = Built(examples=[], sources=[source], bad_rows=bad, notes=[CROWS_LICENSE_NOTE])
    built.counts.update(source_pairs=len(pairs), duplicates_merged=merged, bad_rows=len(bad))
    return unique, built


def _crows_columns(pair) -> dict:
    return {
        "id": f"crows-{pair.id}",
        "source": "crows_pairs",
        "bias_type": pair.bias_type,
        "direction": pair.direction,
    }


def build_crows_sft(config: BuildConfig) -> Built:
    """SFT rows: the rewrite instruction on ``sent_more``, answered by its neutral rewrite."""
    pairs, built = _crows(config)
    skipped = 0
    for pair in pairs:
        neutral = neutral_rewrite(pair.sent_more, pair.sent_less)
        if neutral is None:
            skipped += 1
            continue
        columns = {
            "prompt": _messages(config, pair.sent_more),
            "completion": _reply(neutral),
            **_crows_columns(pair),
            "augmented": "",
        }
        built.examples.append(
            Example(columns, pair.group, pair.bias_type, [pair.sent_more, pair.sent_less, neutral])
        )
    built.counts["no_neutral_rewrite"] = skipped
    built.strategy = "neutral_rewrite"
    built.notes.append(
        "SFT target: a neutral rewrite of sent_more (the group mention replaced by a neutral one, found "
        "from the "
        "word diff with sent_less). Pairs whose diff is not a group mention have no neutral rewrite and are "
        "skipped; the rewrite is heuristic and not always grammatical."
    )
    return built


def build_crows_preference(config: BuildConfig) -> Built:
    """Preference rows from CrowS-Pairs with the configured strategy and prompt style."""
    pairs, built = _crows(config)
    strategy, style = config.strategy, config.prompt_style
    skipped = 0
    for pair in pairs:
        neutral = neutral_rewrite(pair.sent_more, pair.sent_less)
        if strategy == "less_over_more":
            orientations = [("less_over_more", pair.sent_less, pair.sent_more)]
        elif strategy == "neutral_over_more":
            if neutral is None:
                skipped += 1
                continue
            orientations = [("neutral_over_more", neutral, pair.sent_more)]
        else:
            orientations = [
                ("less_over_more", pair.sent_less, pair.sent_more),
                ("more_over_less", pair.sent_more, pair.sent_less),
            ]
        texts = [pair.sent_more, pair.sent_less] + ([neutral] if neutral else [])
        for orientation, chosen, rejected in orientations:
            if style == "continuation":
                prompt, chosen_rest, rejected_rest = split_common_prefix(chosen, rejected)
                row = {"prompt": prompt, "chosen": chosen_rest, "rejected": rejected_rest}
            else:
                row = {
                    "prompt": _messages(config, pair.sent_more),
                    "chosen": _reply(chosen),
                    "rejected": _reply(rejected),
                }
            row.update(_crows_columns(pair), strategy=strategy, orientation=orientation, augmented="")
            if len(orientations) > 1:
                row["id"] = f"{row['id']}-{orientation}"
            built.examples.append(Example(row, pair.group, pair.bias_type, texts))
    if strategy == "neutral_over_more":
        built.counts["no_neutral_rewrite"] = skipped
    built.strategy = strategy
    built.format = "standard" if style == "continuation" else "conversational"
    built.notes.append(STRATEGY_NOTES[strategy])
    if style == "continuation":
        built.notes.append(
            "Prompt style continuation: prompt is the words both sentences share at the start (possibly "
            "empty), "
            "chosen/rejected are the rest of each sentence, as plain text; the likelihood a DPO loss "
            "compares is "
            "then exactly the part of the sentences that CrowS-Pairs scoring compares."
        )
    return built


# ---------------------------------------------------------------- rewrite pairs


def _rewrite_pairs(config: BuildConfig) -> tuple[list, Built]:
    bad: list[BadRow] = []
    log = BadRows(config.on_bad_row, bad)
    file = Path(resolve_data_file(REWRITE_RELATIVE, config.path))
    pairs = load_rewrite_pairs(
        file,
        text_col=config.text_col,
        rewrite_col=config.rewrite_col,
        label_col=config.label_col,
        bias_col=config.bias_col,
        on_bad_row=config.on_bad_row,
        bad_rows=bad,
    )
    name = "srllm" if config.path is None else file.stem
    source = SourceFile.of(name, file, len(pairs) + len(bad), _license(REWRITE_RELATIVE, config.path))
    unique, merged = merge_duplicates(
        pairs,
        key=lambda p: (normalize_text(p.text), normalize_text(p.rewrite)),
        labels=lambda p: (p.label, p.bias_type),
        where=lambda p: (str(file), int(p.id), config.label_col or "label"),
        log=log,
    )
    built = Built(examples=[], sources=[source], bad_rows=bad)
    built.counts.update(source_pairs=len(pairs), duplicates_merged=merged, bad_rows=len(bad))
    if config.path is None:
        built.notes.append(
            "SR-LLM sample data (shainarazavi/Safe-Responsible-LLM): the repository has no license file; "
            "check "
            "terms before redistributing rows."
        )
    return unique, built


def _rewrite_columns(pair, name: str) -> dict:
    return {
        "id": f"{name}-{pair.id}",
        "source": name,
        "bias_type": pair.bias_type or UNSPECIFIED,
        "label": pair.label or UNSPECIFIED,
    }


def build_rewrite_sft(config: BuildConfig) -> Built:
    """SFT rows: the rewrite instruction on the unsafe text, answered by its safe rewrite."""
    pairs, built = _rewrite_pairs(config)
    name = built.sources[0].name
    for pair in pairs:
        columns = {
            "prompt": _messages(config, pair.text),
            "completion": _reply(pair.rewrite),
            **_rewrite_columns(pair, name),
            "augmented": "",
        }
        built.examples.append(
            Example(columns, pair.group, pair.bias_type or UNSPECIFIED, [pair.text, pair.rewrite])
        )
    built.strategy = "rewrite"
    return built


def build_rewrite_preference(config: BuildConfig) -> Built:
    """Preference rows: chosen is the safe rewrite, rejected repeats the unsafe text."""
    pairs, built = _rewrite_pairs(config)
    name = built.sources[0].name
    for pair in pairs:
        columns = {
            "prompt": _messages(config, pair.text),
            "chosen": _reply(pair.rewrite),
            "rejected": _reply(pair.text),
            **_rewrite_columns(pair, name),
            "strategy": "rewrite_over_original",
            "augmented": "",
        }
        built.examples.append(
            Example(columns, pair.group, pair.bias_type or UNSPECIFIED, [pair.text, pair.rewrite])
        )
    built.strategy = "rewrite_over_original"
    built.notes.append(
        "Preference: chosen is the safe rewrite, rejected is the original unsafe text returned unchanged, "
        "so the model learns to prefer rewriting over repeating."
    )
    return built
