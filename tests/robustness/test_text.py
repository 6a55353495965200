"""Text the user cannot see apart is one text, and text a file format allows is read as written:
invisible format characters and compatibility forms never split duplicates, groups or the leakage
audit, and U+2028/U+2029 inside a JSONL or CSV value never split a row."""

from __future__ import annotations

import json

import pytest

from data_builders.builders import BuildConfig, run_build
from data_builders.builders.core import Example, leakage_audit
from data_builders.splits import connected_groups

WORDS = "Women are bad drivers."
LOOKALIKES = [
    "Wo\u200bmen are bad drivers.",  # zero-width space inside a word
    "\ufeffWomen are bad\u00ad drivers.",  # byte-order mark, soft hyphen
    "Women are \uff42\uff41\uff44 drivers.",  # full-width letters (NFKC)
    "Wo\u200dmen are bad drivers.\u2060",  # zero-width joiner, word joiner
]


def example(text: str, group: str) -> Example:
    return Example(columns={"prompt": text}, group=group, stratum="gender", texts=[text])


@pytest.mark.parametrize("lookalike", LOOKALIKES)
def test_invisible_characters_never_hide_a_leak_or_a_duplicate(lookalike):
    splits = {"train": [example(lookalike, "a")], "validation": [], "test": [example(WORDS, "b")]}
    audit, clean = leakage_audit(splits)
    assert audit["overlap_before"] == 1 and audit["train_rows_dropped"] == 1 and clean == []
    assert connected_groups(["a", "b"], [[lookalike], [WORDS]]) == ["a", "a"]


def write_rewrites(path, rows: list[tuple[str, str]]) -> None:
    path.write_text(
        "".join(
            json.dumps({"biased_text": a, "debiased_text": b}, ensure_ascii=False) + "\n" for a, b in rows
        ),
        encoding="utf-8",
    )


def test_a_duplicate_that_differs_only_by_invisible_characters_is_merged(tmp_path):
    rows = [(WORDS, "Some people drive badly."), (LOOKALIKES[0], "Some people drive badly.")]
    write_rewrites(tmp_path / "pairs.jsonl", rows)
    result = run_build(
        BuildConfig(
            kind="sft", source="rewrite_pairs", path=str(tmp_path / "pairs.jsonl"), out=str(tmp_path / "o")
        )
    )
    assert result.provenance["counts"]["duplicates_merged"] == 1
    assert sum(result.provenance["rows"].values()) == 1


def test_line_and_paragraph_separators_inside_jsonl_texts_are_kept(tmp_path):
    """U+2028/U+2029 are legal, unescaped, inside JSON strings; each row stays one row, and the rows after
    it keep their line numbers (a skipped bad row is reported where it is)."""
    rows = [
        ("Old people hate\u2028phones.", "Some people\u2029dislike phones."),
        ("Men never cry.", "Some people rarely cry."),
        ("Poor people are lazy.", " "),  # line 3: a bad row
        ("Girls cannot code.", "Many people learn to code."),
    ]
    write_rewrites(tmp_path / "pairs.jsonl", rows)
    result = run_build(
        BuildConfig(
            kind="sft",
            source="rewrite_pairs",
            path=str(tmp_path / "pairs.jsonl"),
            out=str(tmp_path / "o"),
            on_bad_row="skip",
        )
    )
    assert sum(result.provenance["rows"].values()) == 3
    assert [b.split(":")[0] for b in result.provenance["bad_rows"]] == [
        f"{tmp_path / 'pairs.jsonl'}, row 3, field 'debiased_text'"
    ]
    written = [json.loads(line) for s in ("train", "test") for line in (result.out / f"{s}.jsonl").open()]
    texts = [json.dumps(row, ensure_ascii=False) for row in written]
    assert any("hate" in t and "phones." in t and "dislike phones." in t for t in texts), texts


def test_line_separators_inside_csv_values_are_kept(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "biased_text,debiased_text\n"
        "Old people hate\u2028phones.,Some people dislike phones.\n"
        '"Men never\u2029cry.","Some people rarely cry."\n',
        encoding="utf-8",
    )
    result = run_build(
        BuildConfig(kind="sft", source="rewrite_pairs", path=str(path), out=str(tmp_path / "o"))
    )
    assert sum(result.provenance["rows"].values()) == 2 and not result.provenance["bad_rows"]


def test_reward_score_reads_a_text_with_a_line_separator_as_one_text(cli, tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "one\u2028text"}\n{"text": "two"}\n', encoding="utf-8")
    result = cli("reward", "score", "--reward", "non_empty", "--file", texts, "--out", tmp_path / "s.jsonl")
    assert result.code == 0, result.err
    rows = [
        json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").split("\n") if line
    ]
    assert [r["text"] for r in rows] == ["one\u2028text", "two"]
