"""Source loaders: counts on the real data, and every bad-input case on small fixtures."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from alignment.errors import SafealignError
from data_builders.sources import (
    load_counterfactual,
    load_crows_pairs,
    load_prompt_pool,
    load_rewrite_pairs,
    load_stereoset,
    resolve_data_file,
)
from data_builders.sources import resolve as resolve_mod
from data_builders.splits import assign_split, connected_groups

CROWS_HEADER = ",sent_more,sent_less,stereo_antistereo,bias_type\n"


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- real data (SOURCES.md counts)


def test_crows_pairs_real_counts(data_dir):
    pairs = load_crows_pairs()
    assert len(pairs) == 1508
    assert Counter(p.direction for p in pairs) == {"stereo": 1290, "antistereo": 218}
    assert len({p.bias_type for p in pairs}) == 9
    assert len({p.id for p in pairs}) == 1508
    # the official file repeats one pair (ids 1459 and 1502): they share a split group
    shared = [p for p in pairs if p.group != p.id]
    assert [(p.id, p.group) for p in shared] == [("1502", "1459")]


def test_stereoset_real_counts(data_dir):
    items = load_stereoset()
    assert Counter(i.task for i in items) == {"intrasentence": 2106, "intersentence": 2123}
    assert len({i.id for i in items}) == 4229
    assert all(set(i.sentences) == {"stereotype", "anti-stereotype", "unrelated"} for i in items)
    # ids are derived from content, so they are stable across loads
    assert [i.id for i in load_stereoset()[:5]] == [i.id for i in items[:5]]


def test_rewrite_pairs_and_counterfactual_real(data_dir):
    pairs = load_rewrite_pairs()
    assert len(pairs) == 434
    assert Counter(p.label for p in pairs) == {"Slightly Biased": 312, "Highly Biased": 122}
    # the originals come tokenised ("luck !", "I 'm"); loaded, neither side keeps that spacing
    spacing = re.compile(r" [.,!?;:]| '(?:s|re|ve|ll|d|m)\b| n't\b")
    assert not any(spacing.search(p.text) or spacing.search(p.rewrite) for p in pairs)
    assert len(load_rewrite_pairs(resolve_data_file("srllm/infer_50.csv"))) == 53
    rows = load_counterfactual()
    assert len(rows) == 520 and all(len(r.variants) == 10 for r in rows)


def test_prompt_pools_real(data_dir):
    assert len(load_prompt_pool("rtp")) == 993
    toxigen = load_prompt_pool("toxigen")
    assert len(toxigen) == 31_000 and len({p.group for p in toxigen}) == 16
    assert all(p.text.endswith("\n-") for p in toxigen[:50])
    skipped = []
    bold = load_prompt_pool("bold", bad_rows=skipped)
    assert len(bold) + len(skipped) == 23_679 and len(skipped) == 5  # 5 empty upstream prompts


# ---------------------------------------------------------------- resolution order


def test_resolution_order(tmp_path, monkeypatch):
    explicit = write(tmp_path / "mine.csv", CROWS_HEADER)
    assert resolve_data_file("crows_pairs/crows_pairs_anonymized.csv", explicit) == explicit
    with pytest.raises(SafealignError, match="given explicitly"):
        resolve_data_file("crows_pairs/crows_pairs_anonymized.csv", tmp_path / "absent.csv")
    root = tmp_path / "data"
    write(
        (root / "crows_pairs").mkdir(parents=True) or root / "crows_pairs" / "crows_pairs_anonymized.csv", "x"
    )
    monkeypatch.setenv("SAFEALIGN_DATA_DIR", str(root))
    assert (
        resolve_data_file("crows_pairs/crows_pairs_anonymized.csv")
        == root / "crows_pairs/crows_pairs_anonymized.csv"
    )


def test_offline_error_names_file_and_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFEALIGN_DATA_DIR", raising=False)
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFEALIGN_OFFLINE", "1")
    with pytest.raises(SafealignError, match=r"crows_pairs_anonymized.csv: not found.*SAFEALIGN_DATA_DIR"):
        load_crows_pairs()
    with pytest.raises(SafealignError, match="no download for it"):
        resolve_data_file("somewhere/else.csv")


def test_download_checks_sha256(tmp_path, monkeypatch):
    source = write(tmp_path / "upstream.csv", CROWS_HEADER + '0,"A b.","C b.",stereo,gender\n')
    good = resolve_mod.KnownFile("x/ok.csv", source.as_uri(), resolve_mod.sha256_file(source), "test")
    bad = resolve_mod.KnownFile("x/bad.csv", source.as_uri(), "0" * 64, "test")
    monkeypatch.setattr(resolve_mod, "known_files", lambda: {"x/ok.csv": good, "x/bad.csv": bad})
    monkeypatch.delenv("SAFEALIGN_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SAFEALIGN_OFFLINE", raising=False)
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    got = resolve_data_file("x/ok.csv")
    assert got == tmp_path / "cache" / "data" / "x" / "ok.csv" and got.read_bytes() == source.read_bytes()
    with pytest.raises(SafealignError, match="expected 0000"):
        resolve_data_file("x/bad.csv")
    assert not (tmp_path / "cache" / "data" / "x" / "bad.csv").exists()


# ---------------------------------------------------------------- bad input


BAD_CROWS = {
    "missing column": (",sent_more,sent_less,bias_type\n0,a,b,gender\n", r"row 1, field 'stereo_antistereo'"),
    "empty text": (CROWS_HEADER + '0,"",Women are.,stereo,gender\n', r"row 2, field 'sent_more': empty"),
    "nan text": (
        CROWS_HEADER + "0,NaN,Women are.,stereo,gender\n",
        r"row 2, field 'sent_more': value is NaN",
    ),
    "bad direction": (
        CROWS_HEADER + "0,Men are.,Women are.,sideways,gender\n",
        r"row 2, field 'stereo_antistereo'",
    ),
    "same sentences": (
        CROWS_HEADER + "0,Men are.,men are,stereo,gender\n",
        r"row 2, field 'sent_less': same",
    ),
    "short row": (CROWS_HEADER + "0,Men are.,Women are.\n", r"row 2, field 'stereo_antistereo': missing"),
    "non-utf8": (
        CROWS_HEADER.encode() + b"0,Men \xff are.,Women are.,stereo,gender\n",
        r"row 2, field 'sent_more': not valid UTF-8",
    ),
    "duplicate id": (
        CROWS_HEADER + "0,Men are.,Women are.,stereo,gender\n0,Men do.,Women do.,stereo,gender\n",
        r"row 3, field 'id'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CROWS))
def test_crows_bad_rows_name_file_row_field(tmp_path, case):
    text, pattern = BAD_CROWS[case]
    path = write(tmp_path / "crows.csv", text)
    with pytest.raises(SafealignError, match=pattern) as info:
        load_crows_pairs(path)
    assert "crows.csv" in str(info.value)


def test_skip_policy_counts_bad_rows(tmp_path):
    path = write(
        tmp_path / "crows.csv",
        CROWS_HEADER
        + "0,Men are.,Women are.,stereo,gender\n1,,x,stereo,gender\n2,Old are.,Young are.,antistereo,age\n",
    )
    skipped = []
    pairs = load_crows_pairs(path, on_bad_row="skip", bad_rows=skipped)
    assert [p.id for p in pairs] == ["0", "2"]
    assert len(skipped) == 1 and skipped[0].row == 3 and skipped[0].field == "sent_more"


def test_jsonl_bad_rows(tmp_path):
    rows = [
        {"biased_text": "They are lazy.", "debiased_text": "Some people rest."},
        {"biased_text": 3, "debiased_text": "x"},
    ]
    path = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with pytest.raises(
        SafealignError, match=r"pairs.jsonl, row 2, field 'biased_text': expected text, got int"
    ):
        load_rewrite_pairs(path)
    skipped = []
    assert len(load_rewrite_pairs(path, on_bad_row="skip", bad_rows=skipped)) == 1
    assert [(b.row, b.field) for b in skipped] == [(2, "biased_text"), (3, None)]
    nan = write(tmp_path / "nan.jsonl", '{"biased_text": NaN, "debiased_text": "x"}\n')
    with pytest.raises(SafealignError, match=r"row 1, field 'biased_text': value is NaN"):
        load_rewrite_pairs(nan)


def test_rewrite_column_mapping(tmp_path):
    path = write(tmp_path / "mine.csv", "src,dst,tag\nThey are lazy.,Some people rest.,bad\n")
    pairs = load_rewrite_pairs(path, text_col="src", rewrite_col="dst", label_col="tag")
    assert (pairs[0].text, pairs[0].rewrite, pairs[0].label) == ("They are lazy.", "Some people rest.", "bad")
    with pytest.raises(
        SafealignError, match=r"mine.csv, row 1, field 'biased_text': required column missing"
    ):
        load_rewrite_pairs(path)
    with pytest.raises(SafealignError, match=r"field 'lbl': column not found"):
        load_rewrite_pairs(path, text_col="src", rewrite_col="dst", label_col="lbl")
    same = write(tmp_path / "same.csv", "src,dst\nThey are lazy.,they are lazy\n")
    with pytest.raises(SafealignError, match=r"row 2, field 'dst': rewrite is the same"):
        load_rewrite_pairs(same, text_col="src", rewrite_col="dst")


def test_stereoset_official_layout(tmp_path):
    def sentence(label, text):
        return {"id": label, "sentence": text, "gold_label": label, "labels": []}

    example = {
        "id": "ex1",
        "target": "chess player",
        "bias_type": "profession",
        "context": "The chess player was BLANK.",
        "sentences": [
            sentence("stereotype", "He was asian."),
            sentence("anti-stereotype", "He was hispanic."),
            sentence("unrelated", "He was fox."),
        ],
    }
    path = write(tmp_path / "dev.json", json.dumps({"version": "1.0", "data": {"intrasentence": [example]}}))
    (item,) = load_stereoset(path)
    assert item.id == "ex1" and item.group == "chess player" and item.sentences["unrelated"] == "He was fox."
    example["sentences"] = example["sentences"][:2]
    write(path, json.dumps({"data": {"intrasentence": [example]}}))
    with pytest.raises(SafealignError, match=r"dev.json \[intrasentence\], row 1, field 'sentences'"):
        load_stereoset(path)


def test_splits_are_deterministic_and_grouped():
    keys = [f"k{i}" for i in range(2000)]
    first = [assign_split(k, 0.3, seed=1) for k in keys]
    assert first == [assign_split(k, 0.3, seed=1) for k in keys]
    assert 0.25 < first.count("test") / len(keys) < 0.35
    assert first != [assign_split(k, 0.3, seed=2) for k in keys]
    with pytest.raises(SafealignError, match="test_fraction"):
        assign_split("k", 1.0)
    assert connected_groups(["1", "2", "3", "4"], [["a", "b"], ["c"], ["B"], ["c!"]]) == ["1", "2", "1", "2"]
