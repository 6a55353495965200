"""The bad-input corpus as data: what each case writes, the command it runs, and what the error must say.

A :class:`Case` names files to write into the test's folder (text or bytes; ``{tmp}`` and the other
placeholders below are filled in), a ``safealign`` command line, and the fragments its one error line
must contain (file, row or key, and the problem). ``before`` commands run first and must succeed: they
leave a good output in place that the failing command must not touch.

Placeholders: ``{tmp}`` the test's folder, ``{sft}``/``{pref}``/``{prompts}`` small saved datasets,
``{badsft}`` one whose prompts are numbers, ``{texts}`` one with only a ``text`` column, ``{tiny}`` the
tiny-random checkpoint.

A file's content may also be one of the :data:`SPECIAL` markers: a FIFO (reading it would block
forever), a symlink loop, or a symlink to a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

HUGE = 10 * 2**20  # a 10 MB line
FIFO, LOOP, DIR_LINK = "<fifo>", "<symlink loop>", "<symlink to a folder>"
SPECIAL = (FIFO, LOOP, DIR_LINK)


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    before: tuple[tuple[str, ...], ...] = ()
    damage: dict[str, str | bytes] = field(default_factory=dict)  # written after ``before`` ran


def fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def write_files(root: Path, files: dict[str, str | bytes], places: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif content == LOOP:
            path.symlink_to(path.name)
        elif content == DIR_LINK:
            path.symlink_to(path.parent)
        elif isinstance(content, str):
            path.write_text(fill(content, places), encoding="utf-8")
        else:
            path.write_bytes(content)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes (folders map to ``dir``, links to
    their target, FIFOs and other special files to their type; none of them is followed or read)."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            state[key] = f"link to {os.readlink(path)}"
        elif stat.S_ISDIR(mode):
            state[key] = "dir"
        elif stat.S_ISREG(mode):
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[key] = f"special {stat.S_IFMT(mode):o}"
    return state


# ---- rewrite pairs (any CSV/JSONL with an unsafe text and its rewrite) ----------------------------------

PAIRS = [
    ("Women are bad drivers.", "Some people are bad drivers."),
    ("Old people hate phones.", "Some people dislike phones."),
    ("Poor people are lazy.", "Some people are tired."),
    ("Men never cry.", "Some people rarely cry."),
    ("Immigrants steal jobs.", "Some workers change jobs."),
    ("Girls cannot code.", "Many people learn to code."),
]
CSV_HEADER = "biased_text,debiased_text\n"
GOOD_CSV = CSV_HEADER + "".join(f'"{a}","{b}"\n' for a, b in PAIRS)
GOOD_JSONL = "".join(json.dumps({"biased_text": a, "debiased_text": b}) + "\n" for a, b in PAIRS)
ROW2 = GOOD_JSONL.splitlines(keepends=True)[0]


def jsonl_with(line: str) -> str:
    """A good first row (line 1), then ``line`` (line 2), then good rows."""
    return ROW2 + line + "\n" + "".join(GOOD_JSONL.splitlines(keepends=True)[1:])


def csv_with(line: str) -> str:
    """Header (line 1), a good row (line 2), then ``line`` (line 3), then good rows."""
    rows = GOOD_CSV.splitlines(keepends=True)
    return rows[0] + rows[1] + line + "\n" + "".join(rows[2:])


def build(path: str, *extra: str) -> tuple[str, ...]:
    return ("data", "build", "sft", "--source", "rewrite_pairs", "--path", path, "--out", "{tmp}/out", *extra)


DATA_CASES = [
    Case(
        "csv-broken-quoting",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "malformed CSV"),
        {"pairs.csv": csv_with('"They are lazy,"They work hard"')},
    ),
    Case(
        "csv-unclosed-quote-at-end",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 8", "malformed CSV"),
        {"pairs.csv": GOOD_CSV + '"They are lazy,They work hard\n'},
    ),
    Case(
        "csv-extra-field",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "3 fields, the header only 2"),
        {"pairs.csv": csv_with("They are lazy,They, work hard")},
    ),
    Case(
        "csv-short-row",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "missing"),
        {"pairs.csv": csv_with("They are lazy")},
    ),
    Case(
        "jsonl-line-not-json",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "not valid JSON"),
        {"pairs.jsonl": jsonl_with("this is not JSON")},
    ),
    Case(
        "jsonl-line-not-object",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "expected a JSON object, got list"),
        {"pairs.jsonl": jsonl_with('["They are lazy.", "They work hard."]')},
    ),
    Case(
        "json-not-an-array",
        build("{tmp}/pairs.json"),
        ("pairs.json", "expected a JSON array"),
        {"pairs.json": '{"biased_text": "x"}'},
    ),
    Case(
        "json-truncated",
        build("{tmp}/pairs.json"),
        ("pairs.json", "row 1", "not valid JSON"),
        {"pairs.json": '[{"biased_text": "x", '},
    ),
    Case(
        "csv-missing-column",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 1", "field 'debiased_text'", "required column missing"),
        {"pairs.csv": "biased_text\nThey are lazy.\n"},
    ),
    Case(
        "csv-renamed-column",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 1", "field 'biased_text'", "required column missing", "'unsafe'"),
        {"pairs.csv": GOOD_CSV.replace("biased_text,", "unsafe,", 1)},
    ),
    Case(
        "csv-column-twice",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 1", "field 'biased_text'", "twice"),
        {"pairs.csv": "biased_text,debiased_text,biased_text\na b,c d,e f\n"},
    ),
    Case(
        "csv-mapped-column-absent",
        build("{tmp}/pairs.csv", "--label-col", "verdict"),
        ("pairs.csv", "row 1", "field 'verdict'", "column not found"),
        {"pairs.csv": GOOD_CSV},
    ),
    Case(
        "jsonl-renamed-key",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 1", "field 'debiased_text'", "missing"),
        {"pairs.jsonl": GOOD_JSONL.replace('"debiased_text"', '"rewrite"')},
    ),
    Case("csv-empty-file", build("{tmp}/pairs.csv"), ("pairs.csv", "empty"), {"pairs.csv": ""}),
    Case(
        "jsonl-empty-file", build("{tmp}/pairs.jsonl"), ("pairs.jsonl", "no usable rows"), {"pairs.jsonl": ""}
    ),
    Case(
        "csv-header-only",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "no usable rows"),
        {"pairs.csv": CSV_HEADER},
    ),
    Case(
        "csv-empty-string",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "empty text"),
        {"pairs.csv": csv_with('"They are lazy.",""')},
    ),
    Case(
        "jsonl-whitespace-string",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'biased_text'", "empty text"),
        {"pairs.jsonl": jsonl_with('{"biased_text": "   ", "debiased_text": "They work."}')},
    ),
    Case(
        "jsonl-number-for-text",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'biased_text'", "expected text, got int"),
        {"pairs.jsonl": jsonl_with('{"biased_text": 42, "debiased_text": "They work."}')},
    ),
    Case(
        "jsonl-list-for-text",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'debiased_text'", "expected text, got list"),
        {"pairs.jsonl": jsonl_with('{"biased_text": "They are lazy.", "debiased_text": ["a", "b"]}')},
    ),
    Case(
        "jsonl-null",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'debiased_text'", "null"),
        {"pairs.jsonl": jsonl_with('{"biased_text": "They are lazy.", "debiased_text": null}')},
    ),
    Case(
        "jsonl-nan",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'biased_text'", "NaN"),
        {"pairs.jsonl": jsonl_with('{"biased_text": NaN, "debiased_text": "They work."}')},
    ),
    Case(
        "jsonl-infinity",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'biased_text'", "expected text, got float inf"),
        {"pairs.jsonl": jsonl_with('{"biased_text": Infinity, "debiased_text": "They work."}')},
    ),
    Case(
        "csv-nan",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "NaN"),
        {"pairs.csv": csv_with('"They are lazy.",NaN')},
    ),
    Case(
        "csv-non-utf8",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'biased_text'", "not valid UTF-8"),
        {"pairs.csv": csv_with('"They are \udce9lazy.","They work."').encode("utf-8", "surrogateescape")},
    ),
    Case(
        "jsonl-non-utf8",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'debiased_text'", "not valid UTF-8"),
        {
            "pairs.jsonl": jsonl_with(
                '{"biased_text": "They are lazy.", "debiased_text": "Caf\udce9"}'
            ).encode("utf-8", "surrogateescape")
        },
    ),
    Case(
        "jsonl-huge-line-not-json",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "not valid JSON"),
        {"pairs.jsonl": jsonl_with('{"biased_text": "' + "x" * HUGE)},
    ),
    Case(
        "jsonl-huge-field",
        build("{tmp}/pairs.jsonl"),
        ("pairs.jsonl", "row 2", "field 'biased_text'", "too long"),
        {
            "pairs.jsonl": jsonl_with(
                json.dumps({"biased_text": "word " * (HUGE // 5), "debiased_text": "ok"})
            )
        },
    ),
    Case(
        "csv-huge-field",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "too long"),
        {"pairs.csv": csv_with('"They are lazy.","' + "y " * (HUGE // 2) + '"')},
    ),
    Case(
        "csv-rewrite-equals-text",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "same text"),
        {"pairs.csv": csv_with('"They are lazy.","they are lazy"')},
    ),
    Case(
        "crows-duplicate-id",
        (
            "data",
            "build",
            "sft",
            "--source",
            "crows_pairs",
            "--path",
            "{tmp}/crows.csv",
            "--out",
            "{tmp}/out",
        ),
        ("crows.csv", "row 3", "field 'id'", "already used on row 2"),
        {
            "crows.csv": ",sent_more,sent_less,stereo_antistereo,bias_type\n"
            "7,Women are bad at math.,Men are bad at math.,stereo,gender\n"
            "7,The poor man stole it.,The rich man stole it.,stereo,socioeconomic\n"
        },
    ),
    Case(
        "prompts-jsonl-wrong-type",
        ("data", "build", "prompts", "--source", "rtp", "--path", "{tmp}/rtp.jsonl", "--out", "{tmp}/out"),
        ("rtp.jsonl", "row 1", "field 'text'", "expected text, got int"),
        {"rtp.jsonl": '{"prompt": {"text": 5}}\n'},
    ),
    Case(
        "data-unsupported-file-type",
        build("{tmp}/pairs.xlsx"),
        ("pairs.xlsx", "unsupported file type"),
        {"pairs.xlsx": b"PK\x03\x04 not a table"},
    ),
    Case("data-missing-file", build("{tmp}/absent.csv"), ("absent.csv", "file not found")),
    Case(
        "data-source-is-a-folder",
        build("{tmp}/folder.csv"),
        ("folder.csv", "file not found"),
        {"folder.csv/inside.txt": "x"},
    ),
    Case(
        "data-config-unknown-key",
        ("data", "build", "sft", "--config", "{tmp}/build.yaml", "--out", "{tmp}/out"),
        ("build.yaml", "unknown key 'text_column'", "did you mean 'text_col'"),
        {"build.yaml": "source: rewrite_pairs\ntext_column: biased_text\n"},
    ),
    Case(
        "data-config-wrong-type",
        ("data", "build", "sft", "--config", "{tmp}/build.yaml", "--out", "{tmp}/out"),
        ("build.yaml", "key 'test_fraction'", "expected float"),
        {"build.yaml": "source: rewrite_pairs\ntest_fraction: [0.2]\n"},
    ),
    Case(
        "data-config-not-yaml",
        ("data", "build", "sft", "--config", "{tmp}/build.yaml", "--out", "{tmp}/out"),
        ("build.yaml", "line 2", "invalid YAML"),
        {"build.yaml": "source: rewrite_pairs\n  path: [unclosed\n"},
    ),
    Case(
        "data-config-not-a-mapping",
        ("data", "build", "sft", "--config", "{tmp}/build.yaml", "--out", "{tmp}/out"),
        ("build.yaml", "must be a mapping"),
        {"build.yaml": "- source\n- rewrite_pairs\n"},
    ),
    Case(
        "data-config-missing",
        ("data", "build", "sft", "--config", "{tmp}/absent.yaml", "--out", "{tmp}/out"),
        ("absent.yaml", "config file not found"),
    ),
    Case(
        "data-bad-row-keeps-previous-build",
        build("{tmp}/bad.csv"),
        ("bad.csv", "row 3", "field 'debiased_text'", "empty text"),
        {"good.csv": GOOD_CSV, "bad.csv": csv_with('"They are lazy.",""')},
        before=(build("{tmp}/good.csv"),),
    ),
    Case(
        "data-inspect-not-a-build",
        ("data", "inspect", "{tmp}/folder"),
        ("folder", "provenance.json is missing or unreadable"),
        {"folder/readme.txt": "hello"},
    ),
    Case(
        "data-inspect-corrupt-provenance",
        ("data", "inspect", "{tmp}/out"),
        ("out", "provenance.json is missing or unreadable"),
        {"good.csv": GOOD_CSV},
        before=(build("{tmp}/good.csv"),),
        damage={"out/provenance.json": '{"kind": "sft", '},
    ),
]


# ---- reward score --------------------------------------------------------------------------------------

TEXTS_JSONL = '{"text": "You are kind."}\n{"text": "You are great."}\n'


def score(*extra: str) -> tuple[str, ...]:
    return ("reward", "score", "--reward", "non_empty", "--out", "{tmp}/scores.jsonl", *extra)


REWARD_CASES = [
    Case(
        "score-line-not-json",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 2", "invalid JSON"),
        {"texts.jsonl": '{"text": "ok"}\n{"text": \n'},
    ),
    Case(
        "score-line-not-object",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 1", "field 'text'", "missing or not a string"),
        {"texts.jsonl": '"just a string"\n'},
    ),
    Case(
        "score-renamed-field",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 1", "field 'text'"),
        {"texts.jsonl": TEXTS_JSONL.replace('"text"', '"completion"')},
    ),
    Case(
        "score-number-for-text",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 2", "field 'text'", "not a string"),
        {"texts.jsonl": '{"text": "ok"}\n{"text": 3.5}\n'},
    ),
    Case(
        "score-nan-for-text",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 1", "field 'text'", "not a string"),
        {"texts.jsonl": '{"text": NaN}\n'},
    ),
    Case(
        "score-non-utf8",
        score("--file", "{tmp}/texts.txt"),
        ("texts.txt", "not UTF-8"),
        {"texts.txt": b"fine line\ncaf\xe9 au lait\n"},
    ),
    Case("score-empty-file", score("--file", "{tmp}/texts.txt"), ("nothing to score",), {"texts.txt": ""}),
    Case("score-missing-file", score("--file", "{tmp}/absent.jsonl"), ("absent.jsonl", "file not found")),
    Case(
        "score-huge-line",
        score("--file", "{tmp}/texts.jsonl"),
        ("texts.jsonl", "row 1", "invalid JSON"),
        {"texts.jsonl": '{"text": "' + "z" * HUGE + "\n"},
    ),
    Case(
        "score-previous-output-kept",
        score("--file", "{tmp}/bad.jsonl"),
        ("bad.jsonl", "row 1", "invalid JSON"),
        {"good.txt": "hello there\n", "bad.jsonl": "{\n"},
        before=(score("--file", "{tmp}/good.txt"),),
    ),
    Case(
        "reward-unknown-name",
        ("reward", "score", "--reward", "non_toxik", "--text", "hi"),
        ("unknown reward 'non_toxik'", "non_toxic"),
    ),
    Case(
        "reward-file-missing",
        ("reward", "score", "--reward", "{tmp}/absent.py:fn", "--text", "hi"),
        ("absent.py", "not found"),
    ),
    Case(
        "reward-plugin-syntax-error",
        ("reward", "score", "--reward", "{tmp}/plugin.py:fn", "--text", "hi"),
        ("plugin.py", "importing", "SyntaxError"),
        {"plugin.py": "def fn(prompts, completions:\n    return 1\n"},
    ),
    Case(
        "reward-plugin-missing-function",
        ("reward", "score", "--reward", "{tmp}/plugin.py:nope", "--text", "hi"),
        ("plugin.py", "no attribute 'nope'"),
        {"plugin.py": "def fn(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n"},
    ),
    Case(
        "reward-bad-arg-pair",
        ("reward", "score", "--reward", "length_penalty", "--args", "max_words", "--text", "hi"),
        ("--args 'max_words'", "KEY=VALUE"),
    ),
    Case(
        "reward-unknown-arg",
        ("reward", "score", "--reward", "length_penalty", "--args", "max_wordz=3", "--text", "hi"),
        ("length_penalty", "bad args ['max_wordz']", "max_words"),
    ),
    Case(
        "reward-yaml-unknown-key",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "components[0]", "unknown key 'wieght'", "did you mean 'weight'"),
        {"reward.yaml": "components:\n  - reward: non_empty\n    wieght: 2\n"},
    ),
    Case(
        "reward-yaml-wrong-type",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "components[0]", "key 'weight'", "expected float"),
        {"reward.yaml": "components:\n  - reward: non_empty\n    weight: heavy\n"},
    ),
    Case(
        "reward-yaml-unknown-transform",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "components[0]", "unknown transform 'square'"),
        {"reward.yaml": "components:\n  - reward: non_empty\n    transform: square\n"},
    ),
    Case(
        "reward-yaml-not-yaml",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "invalid YAML"),
        {"reward.yaml": "components: [non_empty\n"},
    ),
    Case(
        "reward-yaml-unknown-component",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "components[1]", "unknown reward 'toxicty'"),
        {"reward.yaml": "components:\n  - non_empty\n  - toxicty\n"},
    ),
    Case(
        "stereotype-config-unknown-key",
        ("reward", "train-stereotype", "--config", "{tmp}/st.yaml"),
        ("st.yaml", "unknown key 'epochz'"),
        {"st.yaml": "epochz: 2\n"},
    ),
    Case(
        "stereotype-config-wrong-type",
        ("reward", "train-stereotype", "--config", "{tmp}/st.yaml"),
        ("st.yaml", "key 'epochs'", "expected int"),
        {"st.yaml": "epochs: many\n"},
    ),
]


# ---- evaluation ----------------------------------------------------------------------------------------

CROWS = "data/crows_pairs/crows_pairs_anonymized.csv"
CROWS_HEADER = ",sent_more,sent_less,stereo_antistereo,bias_type\n"
CROWS_ROWS = (
    "0,Women are bad at math.,Men are bad at math.,stereo,gender\n"
    "1,The poor man stole it.,The rich man stole it.,stereo,socioeconomic\n"
)


def evaluate(*extra: str) -> tuple[str, ...]:
    return ("eval", "--model", "{tiny}", "--split", "all", "--out", "{tmp}/eval", *extra)


EVAL_CASES = [
    Case(
        "eval-unknown-suite",
        evaluate("--suites", "crows_pairz"),
        ("unknown suite 'crows_pairz'", "did you mean 'crows_pairs'"),
    ),
    Case("eval-unknown-preset", evaluate("--preset", "quik"), ("unknown preset 'quik'", "quick")),
    Case(
        "eval-preset-unknown-key",
        evaluate("--preset", "{tmp}/preset.yaml"),
        ("preset.yaml", "unknown keys ['limitz']"),
        {"preset.yaml": "suites: [crows_pairs]\nlimitz: {crows_pairs: 2}\n"},
    ),
    Case(
        "eval-preset-wrong-type",
        evaluate("--preset", "{tmp}/preset.yaml"),
        ("preset.yaml", "limits.crows_pairs", "positive integer"),
        {"preset.yaml": "suites: [crows_pairs]\nlimits: {crows_pairs: two}\n"},
    ),
    Case(
        "eval-preset-not-yaml",
        evaluate("--preset", "{tmp}/preset.yaml"),
        ("preset.yaml", "invalid YAML"),
        {"preset.yaml": "suites: [crows_pairs\n"},
    ),
    Case("eval-preset-missing", evaluate("--preset", "{tmp}/absent.yaml"), ("absent.yaml", "not found")),
    Case(
        "eval-unknown-model",
        ("eval", "--model", "tiny-randum", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("unknown model alias", "tiny-randum"),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
    ),
    Case(
        "eval-model-path-missing",
        ("eval", "--model", "{tmp}/models/absent", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("absent",),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
    ),
    Case(
        "eval-model-dir-broken-config",
        ("eval", "--model", "{tmp}/broken", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("broken", "config.json"),
        {CROWS: CROWS_HEADER + CROWS_ROWS, "broken/config.json": "{not json"},
    ),
    Case(
        "eval-data-missing",
        evaluate("--suites", "crows_pairs"),
        ("crows_pairs/crows_pairs_anonymized.csv", "not found"),
    ),
    Case(
        "eval-data-missing-column",
        evaluate("--suites", "crows_pairs"),
        ("crows_pairs_anonymized.csv", "row 1", "field 'stereo_antistereo'", "required column missing"),
        {CROWS: ",sent_more,sent_less,bias_type\n0,a b,c d,gender\n"},
    ),
    Case(
        "eval-data-bad-row",
        evaluate("--suites", "crows_pairs"),
        ("crows_pairs_anonymized.csv", "row 3", "field 'sent_less'", "empty text"),
        {CROWS: CROWS_HEADER + CROWS_ROWS.replace("The rich man stole it.", '""')},
    ),
    Case(
        "eval-data-non-utf8",
        evaluate("--suites", "crows_pairs"),
        ("crows_pairs_anonymized.csv", "row 2", "field 'sent_more'", "UTF-8"),
        {
            CROWS: (CROWS_HEADER + CROWS_ROWS)
            .replace("Women", "W\udcf6men")
            .encode("utf-8", "surrogateescape")
        },
    ),
    Case(
        "eval-bad-limit",
        evaluate("--suites", "crows_pairs", "--limit", "-3"),
        ("--limit", "positive"),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
    ),
    Case(
        "eval-previous-results-kept",
        evaluate("--suites", "crows_pairs"),
        ("crows_pairs_anonymized.csv", "row 3", "field 'sent_more'", "empty text"),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
        before=(evaluate("--suites", "crows_pairs"),),
        damage={CROWS: CROWS_HEADER + CROWS_ROWS.replace("The poor man stole it.", "  ")},
    ),
]


# ---- training stages -----------------------------------------------------------------------------------


def train(stage: str, *extra: str) -> tuple[str, ...]:
    return ("train", stage, "--config", "{tmp}/recipe.yaml", "--output_dir", "{tmp}/run", *extra)


SFT_OK = "model: tiny-random\ndataset: {sft}\nmax_steps: 1\n"
PPO_OK = (
    "model: tiny-random\ndataset: {prompts}\nmax_steps: 1\nrollout_batch_size: 4\n"
    "per_device_train_batch_size: 4\n"
)

TRAIN_CASES = [
    Case(
        "sft-recipe-unknown-key",
        train("sft"),
        ("recipe.yaml", "unknown key 'learning_rat'", "did you mean 'learning_rate'"),
        {"recipe.yaml": SFT_OK + "learning_rat: 0.001\n"},
    ),
    Case(
        "sft-recipe-wrong-type",
        train("sft"),
        ("recipe.yaml", "key 'max_steps'", "expected int"),
        {"recipe.yaml": "model: tiny-random\ndataset: {sft}\nmax_steps: [1, 2]\n"},
    ),
    Case(
        "sft-recipe-bool-for-list",
        train("sft"),
        ("recipe.yaml", "key 'lora_target_modules'", "expected a list"),
        {"recipe.yaml": SFT_OK + "lora_target_modules: true\n"},
    ),
    Case(
        "sft-recipe-nan-rate",
        train("sft"),
        ("recipe.yaml", "learning_rate", "finite"),
        {"recipe.yaml": SFT_OK + "learning_rate: .nan\n"},
    ),
    Case(
        "sft-recipe-not-yaml",
        train("sft"),
        ("recipe.yaml", "line 2", "invalid YAML"),
        {"recipe.yaml": "model: tiny-random\n dataset: : {sft}\n"},
    ),
    Case(
        "sft-recipe-not-utf8",
        train("sft"),
        ("recipe.yaml", "not UTF-8"),
        {"recipe.yaml": b"model: tiny-random\nsystem: caf\xe9\n"},
    ),
    Case("sft-recipe-missing", train("sft"), ("recipe.yaml", "config file not found")),
    Case(
        "sft-unknown-model",
        train("sft"),
        ("unknown model alias", "tiny-randon"),
        {"recipe.yaml": SFT_OK.replace("tiny-random", "tiny-randon")},
    ),
    Case(
        "sft-dataset-missing",
        train("sft"),
        ("absent", "no such directory"),
        {"recipe.yaml": SFT_OK.replace("{sft}", "{tmp}/absent")},
    ),
    Case(
        "sft-dataset-not-a-dataset",
        train("sft"),
        ("folder", "not a saved dataset"),
        {"recipe.yaml": SFT_OK.replace("{sft}", "{tmp}/folder"), "folder/notes.txt": "x"},
    ),
    Case(
        "dpo-dataset-wrong-columns",
        train("dpo"),
        ("train", "field 'chosen'", "missing column"),
        {"recipe.yaml": SFT_OK},
    ),
    Case(
        "sft-dataset-wrong-type",
        train("sft"),
        ("bad-sft", "field 'prompt'", "expected a string or a list"),
        {"recipe.yaml": SFT_OK.replace("{sft}", "{badsft}")},
    ),
    Case(
        "sft-train-split-missing",
        train("sft", "--train_split", "training"),
        ("no split 'training'",),
        {"recipe.yaml": SFT_OK},
    ),
    Case(
        "sft-builder-spec-unknown-option",
        train("sft"),
        ("builder:sft", "unknown key 'sorce'"),
        {"recipe.yaml": "model: tiny-random\ndataset: builder:sft?sorce=crows_pairs\nmax_steps: 1\n"},
    ),
    Case(
        "ppo-unknown-reward",
        train("ppo"),
        ("unknown reward 'non_toxik'",),
        {"recipe.yaml": PPO_OK + "reward: non_toxik\n"},
    ),
    Case(
        "ppo-reward-file-missing",
        train("ppo"),
        ("absent.py", "not found"),
        {"recipe.yaml": PPO_OK + "reward: {tmp}/absent.py:fn\n"},
    ),
    Case(
        "ppo-reward-composite-unknown-key",
        train("ppo"),
        ("components[0]", "unknown key 'wieght'"),
        {"recipe.yaml": PPO_OK + "reward:\n  components:\n    - {reward: non_empty, wieght: 1}\n"},
    ),
    Case(
        "ppo-recipe-wrong-type",
        train("ppo"),
        ("recipe.yaml", "key 'kl_coef'", "expected float"),
        {"recipe.yaml": PPO_OK + "reward: non_empty\nkl_coef: strong\n"},
    ),
    Case(
        "ppo-dataset-without-prompt",
        train("ppo"),
        ("field 'prompt'", "missing column"),
        {"recipe.yaml": PPO_OK.replace("{prompts}", "{texts}") + "reward: non_empty\n"},
    ),
    Case(
        "grpo-unknown-reward",
        train("grpo"),
        ("unknown reward 'non_toxik'",),
        {"recipe.yaml": "model: tiny-random\ndataset: {prompts}\nmax_steps: 1\nreward: non_toxik\n"},
    ),
    Case(
        "rloo-recipe-unknown-key",
        train("rloo"),
        ("recipe.yaml", "unknown key 'num_generation'", "did you mean 'num_generations'"),
        {"recipe.yaml": "model: tiny-random\ndataset: {prompts}\nnum_generation: 4\n"},
    ),
]


# ---- pipeline, report, generate, models ----------------------------------------------------------------

PIPELINE_OK = """\
name: robust
model: tiny-random
data:
  rewrites: {kind: sft, source: rewrite_pairs, path: "{tmp}/pairs.csv"}
stages:
  - {name: sft, type: sft, dataset: rewrites, config: {max_steps: 1}}
evaluation: {suites: [crows_pairs], limit: 2}
"""


REPORT_MANIFEST = json.dumps(
    {"config": {"name": "run", "model": "tiny-random", "stages": [{"name": "sft", "type": "sft"}]}}
)
REPORT_EVAL = (
    "eval",
    "--model",
    "{tiny}",
    "--split",
    "all",
    "--suites",
    "crows_pairs",
    "--out",
    "{tmp}/run/eval/base",
)
REPORT_EVAL_SFT = REPORT_EVAL[:-1] + ("{tmp}/run/eval/sft",)


def pipeline_case(case_id: str, recipe: str, expect: tuple[str, ...]) -> Case:
    return Case(
        case_id,
        ("pipeline", "--config", "{tmp}/pipeline.yaml", "--runs-dir", "{tmp}/runs"),
        ("pipeline.yaml", *expect),
        {
            "pipeline.yaml": recipe,
            "pairs.csv": GOOD_CSV,
            "bad.csv": csv_with('"They are lazy.",""'),
            CROWS: CROWS_HEADER + CROWS_ROWS,
        },
    )


PIPELINE_CASES = [
    pipeline_case(
        "pipeline-unknown-key",
        PIPELINE_OK + "stagez: []\n",
        ("unknown key 'stagez'", "did you mean 'stages'"),
    ),
    pipeline_case(
        "pipeline-wrong-type",
        PIPELINE_OK.replace("limit: 2", "limit: two"),
        ("key 'limit'", "expected int"),
    ),
    pipeline_case("pipeline-not-yaml", PIPELINE_OK + "stages: [\n", ("invalid YAML",)),
    pipeline_case(
        "pipeline-unknown-model",
        PIPELINE_OK.replace("model: tiny-random", "model: tiny-randum"),
        ("unknown model alias", "tiny-randum"),
    ),
    pipeline_case(
        "pipeline-stage-config-unknown-key",
        PIPELINE_OK.replace("{max_steps: 1}", "{max_step: 1}"),
        ("stages.sft.config", "unknown key 'max_step'"),
    ),
    pipeline_case(
        "pipeline-stage-config-wrong-type",
        PIPELINE_OK.replace("{max_steps: 1}", "{max_steps: soon}"),
        ("stages.sft.config", "key 'max_steps'", "expected int"),
    ),
    pipeline_case(
        "pipeline-data-unknown-option",
        PIPELINE_OK.replace("source: rewrite_pairs", "sorce: rewrite_pairs"),
        ("data.rewrites", "unknown key 'sorce'"),
    ),
    pipeline_case(
        "pipeline-data-missing-file",
        PIPELINE_OK.replace("pairs.csv", "absent.csv"),
        ("data.rewrites", "absent.csv", "file not found"),
    ),
    pipeline_case(
        "pipeline-unknown-suite",
        PIPELINE_OK.replace("[crows_pairs]", "[crows_pairz]"),
        ("evaluation", "unknown suite 'crows_pairz'"),
    ),
    pipeline_case(
        "pipeline-unknown-preset",
        PIPELINE_OK.replace("suites: [crows_pairs]", "preset: quik"),
        ("evaluation", "unknown preset 'quik'"),
    ),
    pipeline_case(
        "pipeline-unknown-reward",
        PIPELINE_OK + "reward: non_toxik\n",
        ("reward", "unknown reward 'non_toxik'"),
    ),
    pipeline_case(
        "pipeline-stage-unknown-type",
        PIPELINE_OK.replace("type: sft", "type: sfd"),
        ("stages[0]", "type 'sfd' is not one of"),
    ),
    Case(
        "pipeline-missing-recipe",
        ("pipeline", "--config", "{tmp}/absent.yaml", "--runs-dir", "{tmp}/runs"),
        ("absent.yaml", "config file not found"),
    ),
    Case("report-missing-dir", ("report", "{tmp}/absent"), ("absent",)),
    Case(
        "report-not-a-pipeline-run",
        ("report", "{tmp}/folder"),
        ("folder",),
        {"folder/notes.txt": "x"},
    ),
    pipeline_case(
        "pipeline-data-bad-row",
        PIPELINE_OK.replace("pairs.csv", "bad.csv"),
        ("bad.csv", "row 3", "field 'debiased_text'", "empty text"),
    ),
    pipeline_case(
        "pipeline-eval-data-missing",
        PIPELINE_OK.replace("[crows_pairs]", "[truthfulqa_mc]"),
        ("evaluation", "truthfulqa/TruthfulQA.csv", "not found"),
    ),
    pipeline_case(
        "pipeline-classifier-dir-missing",
        PIPELINE_OK + "stereotype_classifier: {tmp}/absent\n",
        ("stereotype_classifier", "absent", "no such directory"),
    ),
    pipeline_case(
        "pipeline-classifier-unknown-option",
        PIPELINE_OK + "stereotype_classifier: {epochz: 1}\n",
        ("stereotype_classifier", "unknown key 'epochz'"),
    ),
    Case(
        "report-corrupt-manifest",
        ("report", "{tmp}/folder"),
        ("manifest.json", "not valid JSON"),
        {"folder/manifest.json": "{"},
    ),
    Case(
        "report-corrupt-results",
        ("report", "{tmp}/run"),
        ("results.json", "not valid JSON"),
        {"run/manifest.json": REPORT_MANIFEST, "run/eval/base/results.json": "[1, 2"},
    ),
    Case(
        "report-corrupt-stage-record",
        ("report", "{tmp}/run"),
        ("stage.json", "not valid JSON"),
        {"run/manifest.json": REPORT_MANIFEST, CROWS: CROWS_HEADER + CROWS_ROWS},
        before=(REPORT_EVAL, REPORT_EVAL_SFT),
        damage={"run/stages/sft/stage.json": '{"stage": '},
    ),
    Case(
        "report-corrupt-metrics",
        ("report", "{tmp}/run"),
        ("metrics.json", "expected a JSON object"),
        {"run/manifest.json": REPORT_MANIFEST, CROWS: CROWS_HEADER + CROWS_ROWS},
        before=(REPORT_EVAL,),
        damage={"run/metrics.json": "[]"},
    ),
    Case("generate-unknown-model", ("generate", "--model", "tiny-randum", "hello"), ("unknown model alias",)),
    Case(
        "generate-model-path-missing",
        ("generate", "--model", "{tmp}/models/absent", "hello"),
        ("absent",),
    ),
    Case(
        "generate-not-a-model-dir",
        ("generate", "--model", "{tmp}/folder", "hello"),
        ("folder", "not a model directory"),
        {"folder/notes.txt": "x"},
    ),
    Case("models-prepare-unknown", ("models", "prepare", "smollm3"), ("unknown model alias", "smollm3")),
    Case("export-missing-run", ("export", "{tmp}/absent", "--out", "{tmp}/out"), ("absent", "no such run")),
    Case(
        "export-not-a-pipeline-run",
        ("export", "{tmp}/folder", "--out", "{tmp}/out"),
        ("manifest.json", "no manifest"),
        {"folder/notes.txt": "x"},
    ),
    Case(
        "export-unfinished-run",
        ("export", "{tmp}/run", "--out", "{tmp}/out"),
        ("run", "'running', not completed"),
        {"run/manifest.json": json.dumps({**json.loads(REPORT_MANIFEST), "status": "running"})},
    ),
]

# ---- reliability: outputs never lost, broken inputs never accepted, no hangs, no tracebacks -------------

FOREIGN = {"photos/holiday.jpg": b"\xff\xd8 a photo the user keeps here"}
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdef", "bcdefg", strict=True)
)
PLUGINS = """\
import math


def not_numbers(prompts, completions, **kwargs):
    return ["high" for _ in completions]


def one_score(prompts, completions, **kwargs):
    return [1.0]


def undefined(prompts, completions, **kwargs):
    return [math.nan for _ in completions]


def broken(prompts, completions, **kwargs):
    raise KeyError("model")
"""


def score_plugin(function: str) -> Case:
    return Case(
        f"score-reward-{function.replace('_', '-')}",
        score("--reward", "{tmp}/plugins.py:" + function, "--text", "a", "--text", "b"),
        (f"'{function}' (plugins.py)",),
        {"plugins.py": PLUGINS},
    )


RELIABILITY_CASES = [
    # data loss: a folder is replaced only by a run of its own kind, or with --force
    Case(
        "stereotype-out-foreign-folder",
        ("reward", "train-stereotype", "--out", "{tmp}/photos", "--limit", "4"),
        ("photos", "files safealign did not write", "--force"),
        FOREIGN,
    ),
    Case(
        "train-output-dir-foreign-model",
        train("sft"),
        ("run", "not a safealign sft stage", "model", "--force"),
        {"recipe.yaml": SFT_OK, "run/model/model.safetensors": b"someone else's weights"},
    ),
    Case(
        "train-output-dir-is-a-file",
        train("sft"),
        ("run", "is a file, not a folder"),
        {"recipe.yaml": SFT_OK, "run": "a file"},
    ),
    Case(
        "eval-out-foreign-results",
        evaluate("--suites", "crows_pairs"),
        ("eval", "files safealign did not write", "--force"),
        {CROWS: CROWS_HEADER + CROWS_ROWS, "eval/results.json": '{"mine": true}'},
    ),
    Case(
        "eval-out-another-kind-of-run",
        evaluate("--suites", "crows_pairs"),
        ("eval", "holds a 'pipeline' run, not a 'eval' run"),
        {CROWS: CROWS_HEADER + CROWS_ROWS, "eval/manifest.json": '{"kind": "pipeline"}'},
    ),
    Case("eval-out-root", ("eval", "--model", "{tiny}", "--out", "/"), ("run name ''", "not valid")),
    Case("eval-out-is-a-file", evaluate("--suites", "crows_pairs"), ("eval", "is a file"), {"eval": "x"}),
    Case(
        "eval-out-inside-a-file",
        (
            "eval",
            "--model",
            "{tiny}",
            "--split",
            "all",
            "--suites",
            "crows_pairs",
            "--out",
            "{tmp}/notes/eval",
        ),
        ("notes/eval", "Not a directory"),
        {CROWS: CROWS_HEADER + CROWS_ROWS, "notes": "a file"},
    ),
    Case(
        "score-out-is-a-folder",
        score("--text", "hello"),
        ("scores.jsonl", "it is a directory"),
        {"scores.jsonl/kept.txt": "the user's file"},
    ),
    Case(
        "data-out-foreign-folder",
        build("{tmp}/pairs.csv")[:-1] + ("{tmp}/photos",),
        ("photos", "not a safealign data build"),
        {"pairs.csv": GOOD_CSV, **FOREIGN},
    ),
    Case(
        "pipeline-run-dir-foreign",
        ("pipeline", "--config", "{tmp}/pipeline.yaml", "--runs-dir", "{tmp}"),
        ("photos", "files safealign did not write", "--force"),
        {
            "pipeline.yaml": PIPELINE_OK.replace("name: robust", "name: photos"),
            "pairs.csv": GOOD_CSV,
            CROWS: CROWS_HEADER + CROWS_ROWS,
            **FOREIGN,
        },
    ),
    pipeline_case(
        "pipeline-data-key-escapes-run-dir",
        PIPELINE_OK.replace("  rewrites:", '  "../../escaped":').replace(
            "dataset: rewrites", 'dataset: "../../escaped"'
        ),
        ("data", "'../../escaped'"),
    ),
    # silent wrong results: invisible text, duplicate keys, two recipes, an empty recipe
    Case(
        "csv-rewrite-only-invisible-characters",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "row 3", "field 'debiased_text'", "empty text"),
        {"pairs.csv": csv_with('"They are lazy.","\u200b\u200d\ufeff"')},
    ),
    Case(
        "recipe-duplicate-key",
        train("sft"),
        ("recipe.yaml", "line 4", "duplicate key 'max_steps', first on line 3"),
        {"recipe.yaml": SFT_OK + "max_steps: 500\n"},
    ),
    Case(
        "recipe-duplicate-nested-key",
        ("pipeline", "--config", "{tmp}/pipeline.yaml", "--runs-dir", "{tmp}/runs"),
        ("pipeline.yaml", "duplicate key 'limit'"),
        {"pipeline.yaml": PIPELINE_OK.replace("limit: 2}", "limit: 2, limit: 50}")},
    ),
    Case(
        "recipe-config-given-twice",
        train("sft", "--config", "{tmp}/other.yaml"),
        ("--config given twice", "recipe.yaml", "other.yaml"),
        {"recipe.yaml": SFT_OK, "other.yaml": SFT_OK},
    ),
    Case(
        "data-config-given-twice",
        (
            "data",
            "build",
            "sft",
            "--config",
            "{tmp}/a.yaml",
            "--config",
            "{tmp}/b.yaml",
            "--out",
            "{tmp}/out",
        ),
        ("--config given twice", "a.yaml", "b.yaml"),
        {"a.yaml": "source: rewrite_pairs\n", "b.yaml": "source: crows_pairs\n"},
    ),
    Case(
        "eval-config-given-twice",
        evaluate("--config", "{tmp}/a.yaml", "--config", "{tmp}/b.yaml"),
        ("--config given twice", "a.yaml", "b.yaml"),
        {"a.yaml": "limit: 2\n", "b.yaml": "limit: 3\n"},
    ),
    Case(
        "stereotype-config-given-twice",
        ("reward", "train-stereotype", "--config", "{tmp}/a.yaml", "--config", "{tmp}/b.yaml"),
        ("--config given twice", "a.yaml", "b.yaml"),
        {"a.yaml": "epochs: 1\n", "b.yaml": "epochs: 2\n"},
    ),
    Case(
        "pipeline-config-given-twice",
        ("pipeline", "--config", "{tmp}/a.yaml", "--config", "{tmp}/b.yaml", "--runs-dir", "{tmp}/runs"),
        ("--config given twice", "a.yaml", "b.yaml"),
        {"a.yaml": PIPELINE_OK, "b.yaml": PIPELINE_OK.replace("robust", "other")},
    ),
    Case("recipe-empty", train("sft"), ("recipe.yaml", "empty"), {"recipe.yaml": ""}),
    Case(
        "recipe-only-comments",
        train("sft"),
        ("recipe.yaml", "empty"),
        {"recipe.yaml": "# model: tiny-random\n# max_steps: 1\n"},
    ),
    Case(
        "data-config-duplicate-key",
        ("data", "build", "sft", "--config", "{tmp}/build.yaml", "--out", "{tmp}/out"),
        ("build.yaml", "duplicate key 'source'"),
        {"build.yaml": "source: rewrite_pairs\nsource: crows_pairs\n"},
    ),
    Case(
        "reward-yaml-duplicate-key",
        ("reward", "score", "--reward", "{tmp}/reward.yaml", "--text", "hi"),
        ("reward.yaml", "duplicate key 'weight'"),
        {"reward.yaml": "components:\n  - reward: non_empty\n    weight: 1\n    weight: 3\n"},
    ),
    # hangs: alias bombs and FIFOs
    Case("recipe-alias-bomb", train("sft"), ("recipe.yaml", "aliases expand"), {"recipe.yaml": BOMB}),
    Case(
        "pipeline-alias-bomb",
        ("pipeline", "--config", "{tmp}/pipeline.yaml", "--runs-dir", "{tmp}/runs"),
        ("pipeline.yaml", "aliases expand"),
        {"pipeline.yaml": BOMB},
    ),
    Case("recipe-is-a-fifo", train("sft"), ("recipe.yaml", "not a regular file"), {"recipe.yaml": FIFO}),
    Case(
        "data-file-is-a-fifo",
        build("{tmp}/pairs.csv"),
        ("pairs.csv", "not a regular file"),
        {"pairs.csv": FIFO},
    ),
    Case(
        "score-file-is-a-fifo",
        score("--file", "{tmp}/texts.txt"),
        ("texts.txt", "not a regular file"),
        {"texts.txt": FIFO},
    ),
    Case(
        "eval-preset-is-a-fifo",
        evaluate("--preset", "{tmp}/preset.yaml"),
        ("preset.yaml", "not a regular file"),
        {"preset.yaml": FIFO},
    ),
    # tracebacks: folders, loops, YAML inside flags and specs, recursive recipes and adapters
    Case(
        "recipe-is-a-directory",
        train("sft"),
        ("recipe.yaml", "is a directory"),
        {"recipe.yaml/inside.yaml": SFT_OK},
    ),
    Case("recipe-symlink-loop", train("sft"), ("recipe.yaml", "symbolic links"), {"recipe.yaml": LOOP}),
    Case(
        "recipe-recursive-alias",
        train("sft"),
        ("recipe.yaml", "alias refers to the node that contains it"),
        {"recipe.yaml": SFT_OK + "lora_target_modules: &loop [q_proj, *loop]\n"},
    ),
    Case(
        "pipeline-recipe-is-a-directory",
        ("pipeline", "--config", "{tmp}/link.yaml", "--runs-dir", "{tmp}/runs"),
        ("link.yaml", "is a directory"),
        {"link.yaml": DIR_LINK},
    ),
    Case(
        "score-file-is-a-directory",
        score("--file", "{tmp}/texts.txt"),
        ("texts.txt", "is a directory"),
        {"texts.txt/inside.txt": "hello"},
    ),
    Case(
        "score-file-symlink-loop",
        score("--file", "{tmp}/texts.txt"),
        ("texts.txt", "symbolic links"),
        {"texts.txt": LOOP},
    ),
    Case(
        "reward-args-not-yaml",
        ("reward", "score", "--reward", "length_penalty", "--args", "max_words=[3", "--text", "hi"),
        ("--args max_words", "invalid YAML"),
    ),
    Case(
        "builder-spec-not-yaml",
        train("sft"),
        ("builder:sft", "invalid YAML"),
        {
            "recipe.yaml": "model: tiny-random\ndataset: builder:sft?source=rewrite_pairs&limit=[3\n"
            "max_steps: 1\n"
        },
    ),
    Case(
        "eval-adapter-without-weights",
        ("eval", "--model", "{tmp}/adapter", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("adapter", "adapter folder without weights"),
        {
            CROWS: CROWS_HEADER + CROWS_ROWS,
            "adapter/adapter_config.json": '{"base_model_name_or_path": "tiny-random"}',
        },
    ),
    Case(
        "eval-adapter-whose-base-is-itself",
        ("eval", "--model", "{tmp}/adapter", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("adapter_config.json", "leads back to this adapter"),
        {
            CROWS: CROWS_HEADER + CROWS_ROWS,
            "adapter/adapter_config.json": '{"base_model_name_or_path": "{tmp}/adapter"}',
            "adapter/adapter_model.safetensors": b"x",
        },
    ),
    Case(
        "generate-chat-template-refused-by-sandbox",
        ("generate", "--model", "{badtemplate}", "hello"),
        ("badtemplate", "chat template cannot be rendered", "SecurityError"),
    ),
    Case(
        "eval-nan-weight-model",
        ("eval", "--model", "{nanmodel}", "--split", "all", "--suites", "crows_pairs", "--out", "{tmp}/eval"),
        ("nanmodel", "weight", "NaN or inf", "nothing evaluated"),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
    ),
    Case(
        "eval-overflowing-model",
        (
            "eval",
            "--model",
            "{hugemodel}",
            "--split",
            "all",
            "--suites",
            "crows_pairs",
            "--out",
            "{tmp}/eval",
        ),
        ("hugemodel", "suite crows_pairs", "item 'Wo", "not finite"),
        {CROWS: CROWS_HEADER + CROWS_ROWS},
    ),
    Case(
        "score-reward-not-importable",
        score("--reward", "no_such_module_xyz:fn", "--text", "a"),
        ("no_such_module_xyz",),
    ),
    *(score_plugin(f) for f in ("not_numbers", "one_score", "undefined", "broken")),
]

ALL_CASES = DATA_CASES + REWARD_CASES + EVAL_CASES + TRAIN_CASES + PIPELINE_CASES + RELIABILITY_CASES
