"""Composite rewards: arithmetic, transforms, running normalization, logging and bad component output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment.errors import SafealignError
from reward.composite import Component, CompositeReward, RunningStats, check_rewards
from reward.functions import length_penalty, non_empty


def constant(values):
    def fn(prompts, completions, **kwargs):
        return list(values)

    return fn


def test_weighted_sum_with_transforms_matches_hand_computation():
    a, b, c = [0.2, 0.9, 0.5], [0.1, 0.4, 1.0], [3.0, -1.0, 0.0]
    fn = CompositeReward(
        [
            Component("a", constant(a), weight=0.5),
            Component("b", constant(b), weight=2.0, transform="one_minus"),
            Component("c", constant(c), weight=-0.25, transform="negate"),
        ]
    )
    got = fn(["p"] * 3, ["x", "y", "z"])
    expected = [0.5 * a[i] + 2.0 * (1 - b[i]) + -0.25 * -c[i] for i in range(3)]
    assert got == pytest.approx(expected)
    assert fn.last_raw == {"a": a, "b": b, "c": c}
    assert fn.last_components["b"] == pytest.approx([0.9, 0.6, 0.0])


def test_running_normalization_uses_all_values_seen_so_far():
    first, second = [1.0, 2.0, 3.0], [10.0, 0.0]
    calls = iter([first, second])
    fn = CompositeReward(
        [Component("x", lambda p, c, **k: next(calls), weight=2.0), Component("one", constant([1.0] * 3))],
        normalize=True,
    )
    out1 = fn(["p"] * 3, ["a", "b", "c"])
    seen = np.array(first)
    # 'one' has std 0 so it is only centred (to 0)
    assert out1 == pytest.approx(list(2.0 * (seen - seen.mean()) / seen.std()))
    fn.components[1].fn = constant([1.0] * 2)
    out2 = fn(["p"] * 2, ["d", "e"])
    seen = np.array(first + second)
    assert out2 == pytest.approx(list(2.0 * (np.array(second) - seen.mean()) / seen.std()))


def test_running_stats_match_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    stats, everything = RunningStats(), []
    for size in (1, 7, 3, 20):
        batch = rng.normal(3.0, 2.0, size).tolist()
        stats.update(batch)
        everything += batch
    assert stats.count == len(everything)
    assert stats.mean == pytest.approx(np.mean(everything))
    assert stats.std == pytest.approx(np.std(everything))


@pytest.mark.parametrize(
    "bad, message",
    [
        ([0.1, math.nan], "returned nan for completion 1"),
        ([0.1, None], "returned None for completion 1"),
        ([0.1, "high"], "returned 'high' for completion 1"),
        ([0.1], "returned 1 values for 2 completions"),
        (0.5, "returned float, not a list"),
    ],
)
def test_bad_component_output_names_the_component(bad, message):
    plugin = Component("plugin", lambda p, c, **k: bad)
    fn = CompositeReward([Component("mine", constant([1.0, 1.0])), plugin])
    with pytest.raises(SafealignError, match=f"reward 'plugin' {message}"):
        fn(["p", "p"], ["a", "b"])


def test_component_and_composite_validation():
    with pytest.raises(SafealignError, match="unknown transform 'square'"):
        Component("x", non_empty, transform="square")
    with pytest.raises(SafealignError, match="repeated: x"):
        CompositeReward([Component("x", non_empty), Component("x", length_penalty)])
    with pytest.raises(SafealignError, match="at least one component"):
        CompositeReward([])
    assert check_rewards([True, 2], 2, "x") == [1.0, 2.0]


def test_logs_component_means_through_trl_log_metric_and_passes_kwargs():
    logged, seen_kwargs = {}, {}

    def spy(prompts, completions, **kwargs):
        seen_kwargs.update(kwargs)
        return [0.0, 1.0]

    fn = CompositeReward([Component("spy", spy), Component("len", length_penalty)], name="total")
    fn(["p", "p"], ["a", "b"], log_metric=logged.__setitem__, bias_type=["x", "y"])
    assert logged == {"reward/spy": 0.5, "reward/len": 0.0}
    assert seen_kwargs["bias_type"] == ["x", "y"] and fn.__name__ == "total"


def test_robust_to_empty_none_and_chat_completions():
    fn = CompositeReward([Component("non_empty", non_empty), Component("len", length_penalty)])
    chat = [{"role": "assistant", "content": "Fine, thanks."}]
    assert fn(["p", "p", "p", "p"], ["", None, chat, "word " * 400]) == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert fn([], []) == []
