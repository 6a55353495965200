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
