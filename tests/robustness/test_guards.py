"""Guards that stop a run instead of reporting garbage: rewards that return non-numbers or exit, and
training whose loss or weights stop being finite."""

from __future__ import annotations

import sys

import pytest
import torch

from alignment.rl.rollout import RewardFailed, score_completions


def generator_reward(prompts, completions, **kwargs):
    return (1.0 for _ in completions)


def string_reward(prompts, completions, **kwargs):
    return "0.5" * len(completions)


def string_score_reward(prompts, completions, **kwargs):
    return ["0.5" for _ in completions]


def meta_reward(prompts, completions, **kwargs):
    return torch.zeros(len(completions), device="meta")


def exiting_reward(prompts, completions, **kwargs):
    sys.exit(3)


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (generator_reward, "returned generator, expected a list of numbers"),
        (string_reward, "returned str, expected a list of numbers"),
        (string_score_reward, "returned str '0.5' as score 1, expected a number"),
        (meta_reward, "returned a meta tensor"),
        (exiting_reward, "raised SystemExit: 3"),
    ],
)
def test_a_reward_returning_non_numbers_or_exiting_is_named(fn, problem):
    with pytest.raises(RewardFailed, match=problem) as caught:
        score_completions(fn, ["p", "p"], ["a", "b"], [[1], [2]])
    assert f"'{fn.__name__}' (test_guards.py)" in str(caught.value)


def test_tensors_and_arrays_of_scores_are_accepted():
    import numpy as np

    def tensor_reward(prompts, completions, **kwargs):
        return torch.tensor([0.25, 0.5])

    def array_reward(prompts, completions, **kwargs):
        return np.array([1, 2])

    assert score_completions(tensor_reward, ["p", "p"], ["a", "b"], [[1], [2]]) == [0.25, 0.5]
    assert score_completions(array_reward, ["p", "p"], ["a", "b"], [[1], [2]]) == [1.0, 2.0]
