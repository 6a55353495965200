"""`safealign data`: builds from the command line, and every bad-input case exits 2 with nothing written."""

from __future__ import annotations

import json

import pytest

HEADER = ",sent_more,sent_less,stereo_antistereo,bias_type\n"
GOOD = '0,"Black people are lazy.","White people are lazy.",stereo,race-color\n'
GOOD2 = '1,"Women cannot drive.","Men cannot drive.",stereo,gender\n'

BAD_CSV = {
    "missing column": (",sent_more,sent_less,bias_type\n0,a b,c d,x\n", "row 1, field 'stereo_antistereo'"),
    "empty text": (
        HEADER + GOOD + '1,"  ","Men cannot drive.",stereo,gender\n',
        "row 3, field 'sent_more': empty",
    ),
    "nan": (
        HEADER + GOOD + "1,nan,Men cannot drive.,stereo,gender\n",
        "row 3, field 'sent_more': value is NaN",
    ),
    "malformed row": (HEADER + GOOD + "1,Women cannot drive.\n", "row 3, field 'sent_less': missing"),
    "same sentences": (
        HEADER + GOOD + "1,Men drive.,men drive,stereo,gender\n",
        "row 3, field 'sent_less': same",
    ),
    "bad direction": (
        HEADER + GOOD + "1,Women drive.,Men drive.,both,gender\n",
        "row 3, field 'stereo_antistereo'",
    ),
    "conflicting duplicate": (
        HEADER + GOOD + '1,"Black people are lazy.","White people are lazy.",antistereo,race-color\n',
        "row 3, field 'stereo_antistereo': duplicate of row 2",
    ),
}


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_exits_2_and_writes_nothing(cli, tmp_path, case):
    text, message = BAD_CSV[case]
    source = write(tmp_path / "crows.csv", text)
    out = tmp_path / "built"
    result = cli("data", "build", "preference", "--source", "crows_pairs", "--path", source, "--out", out)
    assert result.code == 2, result.err
    assert result.err.startswith("safealign: error: ") and "crows.csv" in result.err and message in result.err
    assert "Traceback" not in result.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["crows.csv"]


def test_non_utf8_and_wrong_type(cli, tmp_path):
    source = write(
        tmp_path / "crows.csv",
        HEADER.encode() + b'0,"Black \xe9 people are lazy.","White people.",stereo,race\n',
    )
    result = cli("data", "build", "sft", "--source", "crows_pairs", "--path", source, "--out", tmp_path / "o")
    assert result.code == 2 and "crows.csv, row 2, field 'sent_more': not valid UTF-8" in result.err
    pairs = write(tmp_path / "pairs.jsonl", '{"biased_text": "They are lazy.", "debiased_text": 7}\n')
    result = cli(
        "data", "build", "sft", "--source", "rewrite_pairs", "--path", pairs, "--out", tmp_path / "o"
    )
    assert (
        result.code == 2 and "pairs.jsonl, row 1, field 'debiased_text': expected text, got int" in result.err
    )
    assert not (tmp_path / "o").exists()


def test_skip_bad_rows_counts_them_in_the_card(cli, tmp_path):
    source = write(tmp_path / "crows.csv", HEADER + GOOD + "1,,Men drive.,stereo,gender\n" + GOOD2)
    out = tmp_path / "built"
    args = ("data", "build", "sft", "--source", "crows_pairs", "--path", source, "--out", out)
    result = cli(*args, "--on-bad-row", "skip")
    assert result.code == 0, result.err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["counts"]["bad_rows"] == 1 and "row 3, field 'sent_more'" in provenance["bad_rows"][0]
    card = (out / "README.md").read_text()
    assert "## Skipped rows" in card and "| bad_rows | 1 |" in card
    again = cli(*args, "--on-bad-row", "skip")
    assert again.code == 0 and "up to date" in again.out


def test_build_from_yaml_and_inspect(cli, tmp_path):
    source = write(tmp_path / "crows.csv", HEADER + GOOD + GOOD2)
    config = write(
        tmp_path / "data.yaml", f"source: crows_pairs\npath: {source}\nstrategy: less_over_more\nseed: 1\n"
    )
    out = tmp_path / "built"
    result = cli("data", "build", "preference", "--config", config, "--out", out, "--test-fraction", "0.5")
    assert result.code == 0, result.err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["seed"] == 1 and provenance["config"]["test_fraction"] == 0.5
    assert provenance["strategy"] == "less_over_more"
    assert (out / "train.jsonl").exists() and (out / "dataset_card.md").exists()
    shown = cli("data", "inspect", out, "--examples", "1")
    assert shown.code == 0 and "less_over_more" in shown.out and "rows per stratum" in shown.out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("preference", "--source", "crows_pairs", "--prompt-style", "rewrite"),
            "parity needs --prompt-style",
        ),
        (("sft", "--source", "nowhere"), "cannot build sft"),
        (("sft", "--source", "crows_pairs", "--test-fraction", "1.5"), "--test-fraction"),
        (("sft", "--source", "crows_pairs", "--on-bad-row", "ignore"), "--on-bad-row"),
    ],
)
def test_bad_options_exit_2(cli, tmp_path, args, message):
    result = cli("data", "build", *args, "--out", tmp_path / "o")
    assert result.code == 2 and message in result.err and not (tmp_path / "o").exists()


def test_bad_yaml_key_and_missing_inputs(cli, tmp_path):
    config = write(tmp_path / "data.yaml", "sorce: crows_pairs\n")
    result = cli("data", "build", "sft", "--config", config, "--out", tmp_path / "o")
    assert result.code == 2 and "unknown key 'sorce'" in result.err and "did you mean 'source'" in result.err
    result = cli(
        "data",
        "build",
        "sft",
        "--source",
        "crows_pairs",
        "--path",
        tmp_path / "nope.csv",
        "--out",
        tmp_path / "o",
    )
    assert result.code == 2 and "nope.csv: file not found" in result.err
    result = cli("data", "inspect", tmp_path / "absent")
    assert result.code == 2 and "no built dataset" in result.err


def test_sources_lists_known_files(cli):
    result = cli("data", "sources")
    assert result.code == 0 and "crows_pai" in result.out and "toxigen" in result.out
