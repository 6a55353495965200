"""Rollout mechanics on the tiny model: teacher-forced log-probs equal the sampling distribution."""

from __future__ import annotations

import pytest
import torch

from alignment.generation import format_prompt
from alignment.rl.rollout import reference_logprobs, response_mask, rollout_statistics
from alignment.rl.value_head import PolicyWithValue

PROMPTS = ["Hello!", "What is the capital of France? Tell me a long story about the city.", "The doctor said"]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from alignment.models import load_model

    model, tokenizer = load_model(tiny_model, device="cpu")
    tokenizer.padding_side = "left"
    batch = tokenizer(
        [format_prompt(tokenizer, p) for p in PROMPTS],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    return model, tokenizer, batch


def test_teacher_forced_logprobs_match_generation_scores(tiny):
    model, tokenizer, batch = tiny
    assert batch.attention_mask[:, 0].tolist().count(0) == 2  # left padding is exercised
    temperature = 0.7
    torch.manual_seed(0)
    out = model.generate(
        **batch,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=12,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    responses = out.sequences[:, batch.input_ids.shape[1] :]
    mask, _ = response_mask(responses, [tokenizer.eos_token_id])
    sampled = torch.stack(out.logits, dim=1).float() / temperature
    expected = torch.log_softmax(sampled, -1).gather(2, responses.unsqueeze(-1)).squeeze(-1)

    wrapped = PolicyWithValue(model)
    logprobs, values, entropy = rollout_statistics(
        wrapped, batch.input_ids, batch.attention_mask, responses, mask, temperature, chunk_size=2
    )
    torch.testing.assert_close(logprobs * mask, expected * mask, atol=1e-4, rtol=0)
    torch.testing.assert_close(values, torch.zeros_like(values))  # zero-initialised value head
    assert (entropy > 0).all()
    ref = reference_logprobs(model, batch.input_ids, batch.attention_mask, responses, mask, temperature, 3)
    torch.testing.assert_close(ref * mask, expected * mask, atol=1e-4, rtol=0)


def _rollouts(model, tokenizer, batch, temperature=1.0):
    from alignment.rl.rollout import sample_responses
    from alignment.rl.update import Rollouts

    torch.manual_seed(1)
    wrapped = PolicyWithValue(model)
    responses = sample_responses(
        model,
        batch.input_ids,
        batch.attention_mask,
        max_new_tokens=10,
        temperature=temperature,
        eos_token_ids=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    mask, _ = response_mask(responses, [tokenizer.eos_token_id])
    responses = responses.masked_fill(mask == 0, tokenizer.pad_token_id)
    logprobs, values, entropy = rollout_statistics(
        wrapped, batch.input_ids, batch.attention_mask, responses, mask, temperature, chunk_size=3
    )
    scores = torch.tensor([1.0, -1.0, 0.5])
    return wrapped, Rollouts(
        batch.input_ids,
        batch.attention_mask,
        responses,
        mask,
        logprobs,
        logprobs.clone(),
        values,
        scores,
        entropy,
    )


def test_first_update_sees_ratio_one_and_accumulation_matches_one_big_batch(tiny):
    import copy

    from alignment.rl.update import PPOHyperparameters, ppo_update

    model, tokenizer, batch = tiny
    results = []
    for micro in (3, 1):  # one pass over all three rollouts vs three accumulated micro-batches
        policy = copy.deepcopy(model)
        wrapped, rollouts = _rollouts(policy, tokenizer, batch)
        optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.1)
        hp = PPOHyperparameters(ppo_epochs=1, mini_batch_size=3, micro_batch_size=micro, max_grad_norm=1e9)
        stats = ppo_update(wrapped, optimizer, rollouts, 0.1, hp, generator=torch.Generator().manual_seed(0))
        # the update's first forward reproduces the rollout log-probs exactly: ratio 1, no clipping
        assert stats["ratio"] == pytest.approx(1.0, abs=1e-5)
        assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats["clip_fraction"] == 0.0
        results.append((stats, [p.detach().clone() for p in wrapped.parameters()]))
    (big, big_params), (small, small_params) = results
    assert big["policy_loss"] == pytest.approx(small["policy_loss"], abs=1e-5)
    assert big["value_loss"] == pytest.approx(small["value_loss"], abs=1e-5)
    for a, b in zip(big_params, small_params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(big_params, [p for p in model.parameters()] + [None], strict=False)
        if b is not None
    )
