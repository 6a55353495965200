"""The reward registry: built-ins, user functions by dotted path / file / entry point, YAML specs, CLI."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest

from alignment.errors import SafealignError
from reward.composite import CompositeReward
from reward.registry import BUILTINS, build_reward, known_names, resolve_reward
from reward.toxicity import load_scorer

USER_MODULE = '''
"""A user's reward functions, kept outside safealign."""
CALLS = []


def polite(prompts, completions, bonus=1.0, **kwargs):
    CALLS.append(len(completions))
    return [bonus if "please" in str(c).lower() else 0.0 for c in completions]


class Keyword:
    def __init__(self, word):
        self.word = word

    def __call__(self, prompts, completions, **kwargs):
        return [float(self.word in str(c)) for c in completions]


def broken(prompts, completions, **kwargs):
    return [float("nan")] * len(completions)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.rewards"
    for name in ("userpkg.rewards", "userpkg"):
        sys.modules.pop(name, None)


def test_builtin_and_dotted_path_rewards(user_module):
    assert {"toxicity", "non_toxic", "stereotype", "anti_stereotype", "length_penalty"} <= set(known_names())
    polite = resolve_reward(f"{user_module}:polite", {"bonus": 2.0})
    assert polite.__name__ == "polite"
    assert polite(["q", "q"], ["Please sit.", "Sit."]) == [2.0, 0.0]
    keyword = resolve_reward(f"{user_module}:Keyword", {"word": "cat"})
    assert keyword(["q", "q"], ["a cat", "a dog"]) == [1.0, 0.0]
    assert resolve_reward("length_penalty", {"max_words": 1})(["q"], ["a b"]) == [-1.0]


def test_yaml_combines_a_user_function_with_builtins(tmp_path, user_module):
    spec = tmp_path / "reward.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            name: safe_and_polite
            components:
              - reward: non_toxic
                weight: 2.0
                args: {{scorer: jigsaw-bilstm}}
              - reward: {user_module}:polite
                name: polite
                weight: 0.5
              - reward: toxicity
                name: tox_penalty
                transform: negate
                weight: 1.0
                args: {{scorer: jigsaw-bilstm}}
            """
        )
    )
    fn = build_reward(spec)
    completions = ["Please, you are a stupid idiot.", "Please have a lovely day."]
    tox = load_scorer("jigsaw-bilstm").score(completions)
    polite = [1.0, 1.0]
    expected = [2.0 * (1 - t) + 0.5 * p - t for t, p in zip(tox, polite, strict=True)]
    assert isinstance(fn, CompositeReward) and fn.__name__ == "safe_and_polite"
    assert fn(["q", "q"], completions) == pytest.approx(expected)
    assert fn.last_raw["tox_penalty"] == pytest.approx(tox)
    described = fn.describe()["components"][0]
    assert described["info"]["backend"] == "jigsaw-bilstm" and described["weight"] == 2.0


def test_plugin_file_next_to_the_yaml(tmp_path):
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    (tmp_path / "spec.yaml").write_text("reward: my_rewards.py:Keyword\nargs: {word: hello}\n")
    fn = build_reward(str(tmp_path / "spec.yaml"))
    assert fn(["q", "q"], ["hello you", "bye"]) == [1.0, 0.0]
    assert pickle.loads(pickle.dumps(fn))(["q"], ["hello"]) == [1.0]


def test_entry_point_plugins_are_loaded_only_when_named(tmp_path, monkeypatch):
    (tmp_path / "lazy_plugin.py").write_text(
        "import os\nos.environ['LAZY_PLUGIN_IMPORTED'] = '1'\n"
        "def shout(prompts, completions, **kw):\n    return [float(str(c).isupper()) for c in completions]\n"
    )
    dist = tmp_path / "lazy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[safealign.rewards]\nshout = lazy_plugin:shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LAZY_PLUGIN_IMPORTED", raising=False)
    try:
        assert "shout" in known_names()
        assert "LAZY_PLUGIN_IMPORTED" not in __import__("os").environ
        fn = build_reward("shout")
        assert fn(["q", "q"], ["HEY", "hey"]) == [1.0, 0.0]
        assert __import__("os").environ["LAZY_PLUGIN_IMPORTED"] == "1"
    finally:
        sys.modules.pop("lazy_plugin", None)


def test_unknown_names_and_bad_specs_are_clear_errors(tmp_path, user_module):
    with pytest.raises(SafealignError, match="unknown reward 'kindness'; known: toxicity, non_toxic"):
        build_reward("kindness")
    with pytest.raises(SafealignError, match="cannot import 'nope_pkg.mod'"):
        build_reward("nope_pkg.mod:fn")
    with pytest.raises(SafealignError, match="has no attribute 'missing'"):
        build_reward(f"{user_module}:missing")
    with pytest.raises(SafealignError, match="file missing.py not found"):
        build_reward("missing.py:fn")
    with pytest.raises(SafealignError, match="bad args"):
        resolve_reward(f"{user_module}:Keyword", {"colour": "red"})
    with pytest.raises(SafealignError, match="bad args"):
        resolve_reward("length_penalty", {"max_word": 3})
    spec = tmp_path / "r.yaml"
    spec.write_text("components:\n  - reward: non_empty\n    wieght: 2\n")
    with pytest.raises(SafealignError, match=r"r.yaml, components\[0\]: unknown key 'wieght' \(did you mean"):
        build_reward(spec)
    spec.write_text("components:\n  - reward: non_empty\n  - reward: kindness\n")
    with pytest.raises(SafealignError, match=r"r.yaml, components\[1\]: unknown reward 'kindness'"):
        build_reward(spec)
    spec.write_text("components:\n  - reward: non_empty\n    transform: square\n")
    with pytest.raises(SafealignError, match="unknown transform 'square'"):
        build_reward(spec)
    nan_fn = build_reward([{"reward": f"{user_module}:broken"}])
    with pytest.raises(SafealignError, match=f"reward '{user_module}:broken' returned nan"):
        nan_fn(["q"], ["x"])


def test_single_component_spec_returns_the_plain_callable_or_a_weighted_one():
    plain = build_reward({"reward": "non_empty"})
    assert plain is BUILTINS["non_empty"].plain
    weighted = build_reward({"reward": "non_empty", "weight": 3.0})
    assert weighted(["q", "q"], ["x", ""]) == [3.0, 0.0]


def test_toxicity_rewards_pickle_and_accept_trl_kwargs():
    fn = build_reward({"reward": "non_toxic", "args": {"scorer": "jigsaw-bilstm"}})
    again = pickle.loads(pickle.dumps(fn))
    texts = ["You are a stupid idiot.", "Have a lovely day!"]
    kwargs = {"completion_ids": [[1], [2]], "trainer_state": None, "log_metric": print}
    assert again(["q", "q"], texts, **kwargs) == pytest.approx(fn(["q", "q"], texts))
    assert fn.__name__ == "non_toxic" and fn(["q", "q"], texts)[0] < 0.2 < 0.8 < fn(["q", "q"], texts)[1]


def test_reward_cli_list_and_score(cli, tmp_path):
    result = cli("reward", "list")
    assert result.code == 0 and "non_toxic" in result.out and "length_penalty" in result.out
    result = cli(
        "reward",
        "score",
        "--reward",
        "toxicity",
        "--args",
        "scorer=jigsaw-bilstm",
        "--text",
        "You are a stupid idiot.",
        "--text",
        "Have a lovely day!",
    )
    assert result.code == 0 and "jigsaw-bilstm" in result.out
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "Have a lovely day!"}\n{"text": "Shut up, idiot."}\n')
    out = tmp_path / "scores.jsonl"
    result = cli("reward", "score", "--reward", "non_toxic", "--file", texts, "--out", out)
    assert result.code == 0 and len(out.read_text().splitlines()) == 2


def test_reward_cli_errors_exit_2(cli, tmp_path):
    result = cli("reward", "score", "--reward", "kindness", "--text", "hi")
    assert result.code == 2 and "unknown reward 'kindness'" in result.err and "Traceback" not in result.err
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no text field"}\n')
    result = cli("reward", "score", "--file", bad)
    assert result.code == 2 and f"{bad}, row 2, field 'text'" in result.err
    result = cli(
        "reward",
        "score",
        "--reward",
        "anti_stereotype",
        "--args",
        f"model={tmp_path / 'none'}",
        "--text",
        "hi",
    )
    assert result.code == 2 and "no stereotype classifier" in result.err
