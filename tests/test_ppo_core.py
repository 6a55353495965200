"""PPO building blocks against hand-computed values (alignment.rl)."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.rl.advantages import gae, masked_mean, masked_var, whiten
from alignment.rl.kl import KLController, kl_per_token
from alignment.rl.losses import entropy_from_logits, explained_variance, policy_loss, value_loss
from alignment.rl.rollout import position_ids_from_mask, response_mask, score_completions
from alignment.rl.update import token_rewards


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual.float(), torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


# ------------------------------------------------------------------------------------------------ GAE


def test_gae_matches_hand_computation_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0], [0.5, -1.0, 3.0, 3.0]])
    values = torch.tensor([[0.2, 0.4, 0.6, 9.0], [0.1, -0.2, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: d2 = 1 - 0.6 = 0.4; d1 = 0.9*0.6 - 0.4 = 0.14; d0 = 0.9*0.4 - 0.2 = 0.16
    #        A2 = 0.4; A1 = 0.14 + 0.72*0.4 = 0.428; A0 = 0.16 + 0.72*0.428 = 0.46816
    # row 1: d1 = -1 + 0.2 = -0.8; d0 = 0.5 + 0.9*(-0.2) - 0.1 = 0.22; A0 = 0.22 + 0.72*(-0.8) = -0.356
    close(advantages, [[0.46816, 0.428, 0.4, 0.0], [-0.356, -0.8, 0.0, 0.0]])
    close(returns, [[0.66816, 0.828, 1.0, 0.0], [-0.256, -1.0, 0.0, 0.0]])


def test_gae_limits_monte_carlo_and_td():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    mc, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)  # A_t = sum of future rewards - V_t
    close(mc, [[6.0 - 0.5, 5.0 - 1.0, 3.0 - 1.5]])
    td, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)  # A_t = r_t + gamma V_{t+1} - V_t
    close(td, [[1.0 + 0.5 - 0.5, 2.0 + 0.75 - 1.0, 3.0 - 1.5]])


# ------------------------------------------------------------------------------------- whitening


def test_masked_statistics_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.5)
    assert masked_var(x, mask).item() == pytest.approx(5.0 / 3.0)  # (2.25+0.25+0.25+2.25)/3
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(1.25)
    close(masked_mean(x, mask, dim=1), [1.5, 3.5])


def test_whiten_hand_values_and_mask():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    std = math.sqrt(5.0 / 3.0)
    expected = [[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 1.5 / std, 0.0]]
    close(whiten(x, mask), expected, tol=1e-4)
    kept_mean = whiten(x, mask, shift_mean=False)
    close(kept_mean, [[v + 2.5 if i < 2 else 0.0 for i, v in enumerate(row)] for row in expected], tol=1e-4)
    w = whiten(torch.randn(4, 9) * 5 + 3, torch.ones(4, 9))
    assert w.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert w.std().item() == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------------- losses


def test_policy_loss_hand_values_and_gradient():
    old = torch.log(torch.tensor([[0.4, 0.4, 0.4]]))
    new = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).requires_grad_(True)
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    out = policy_loss(new, old, advantages, torch.ones(1, 3), clip_range=0.2)
    # ratios 1.25, 0.75, 0.5 -> terms max(-1.25, -1.2) = -1.2 (clipped), max(0.75, 0.8) = 0.8 (clipped),
    # max(-1.0, -1.6) = -1.0 (unclipped)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 1.0) / 3)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    assert out.ratio_mean.item() == pytest.approx(0.8333333)
    out.loss.backward()
    # clipped tokens get no gradient; the unclipped one gets -A * ratio / n = -2 * 0.5 / 3
    close(new.grad, [[0.0, 0.0, -1.0 / 3.0]])


def test_policy_loss_ignores_padding_and_is_zero_kl_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    out = policy_loss(logp, logp.clone(), torch.tensor([[1.0, 3.0, 99.0]]), torch.tensor([[1, 1, 0]]))
    assert out.loss.item() == pytest.approx(-2.0)
    assert out.approx_kl.item() == 0.0 and out.clip_fraction.item() == 0.0


def test_value_loss_hand_values():
    values = torch.tensor([[1.0, 0.0, 2.0, 5.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    out = value_loss(values, old, returns, torch.tensor([[1, 1, 1, 0]]), clip_range=0.2)
    # clipped values 0.7, 0.3, 0.7 -> errors max(1, 1.69), max(1, 0.49), max(4, 0.49)
    assert out.loss.item() == pytest.approx(0.5 * (1.69 + 1.0 + 4.0) / 3)
    assert out.clip_fraction.item() == pytest.approx(1 / 3)
    out.loss.backward()
    # token 0 is clipped (no gradient); tokens 1, 2: (V - R) / n
    close(values.grad, [[0.0, -1.0 / 3.0, 2.0 / 3.0, 0.0]])


def test_entropy_and_explained_variance():
    close(entropy_from_logits(torch.zeros(1, 2, 8)), [[math.log(8), math.log(8)]])
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(target, torch.ones(1, 4), mask))


# -------------------------------------------------------------------------------------------- KL


def test_kl_estimators_hand_values():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])  # d = 0.5, -1.0
    close(kl_per_token(logp, ref, "k1"), [0.5, -1.0])
    close(kl_per_token(logp, ref, "k2"), [0.125, 0.5])
    close(kl_per_token(logp, ref, "k3"), [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0])
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(logp, ref, "k4")


def test_kl_estimators_are_unbiased_where_promised():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(6), 0)
    q = torch.softmax(torch.randn(6), 0)
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    for estimator in ("k1", "k3"):
        assert kl_per_token(logp, logq, estimator).mean().item() == pytest.approx(exact, rel=0.03)


def test_adaptive_kl_controller():
    fixed = KLController(0.2)
    assert fixed.update(kl=100.0, n_steps=64) == 0.2
    adaptive = KLController(0.2, target=6.0, horizon=1000)
    adaptive.update(kl=3.0, n_steps=100)  # error clipped to -0.2 -> x(1 - 0.02)
    assert adaptive.value == pytest.approx(0.196)
    adaptive.update(kl=6.6, n_steps=100)  # error 0.1 -> x(1 + 0.01)
    assert adaptive.value == pytest.approx(0.196 * 1.01)


def test_token_rewards_put_score_on_last_real_token():
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, -5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards, kl = token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.5)
    close(kl, [[0.5, 0.0, -0.5], [-1.0, 0.0, 0.0]])
    close(rewards, [[-0.25, 0.0, 0.25 + 2.0], [0.5 - 1.0, 0.0, 0.0]])


# ----------------------------------------------------------------------------------- rollout bits


def test_response_mask_and_positions():
    ids = torch.tensor([[4, 9, 2, 0, 0], [2, 5, 5, 5, 5], [4, 4, 4, 4, 4], [4, 3, 4, 3, 9]])
    mask, ended = response_mask(ids, eos_token_ids=[2, 3])
    close(mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert ended.tolist() == [True, True, False, True]
    close(position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1, 0]])), [[0, 0, 0, 1, 2, 2]])


def test_score_completions_checks_length_and_maps_none_to_nan():
    def fn(prompts, completions, **kwargs):
        return [None if c == "?" else len(c) for c in completions]

    scores = score_completions(fn, ["p", "p"], ["abc", "?"], [[1], [2]])
    assert scores[0] == 3.0 and math.isnan(scores[1])
    with pytest.raises(ValueError, match="returned 1 scores for 2 completions"):
        score_completions(lambda prompts, completions, **kw: [1.0], ["p", "p"], ["a", "b"], [[1], [2]])
