"""The one batched sampler (alignment.generation.sample) against a one-prompt-at-a-time greedy loop."""

from __future__ import annotations

import pytest
import torch

from alignment.errors import SafealignError
from alignment.generation import format_prompt, generate, sample
from alignment.models import load_model

PROMPTS = ["The nurse said", "A very long prompt about the weather in the mountains today is", "Hi"]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_model(tiny_model, device="cpu")


def greedy_alone(model, tokenizer, text: str, max_new_tokens: int, add_special_tokens: bool) -> str:
    """The reference: no batch, no padding, argmax of the last position, stop at EOS."""
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(new, skip_special_tokens=True)


def test_greedy_batches_match_one_prompt_at_a_time(tiny):
    model, tokenizer = tiny
    got = sample(model, tokenizer, PROMPTS, max_new_tokens=6, temperature=0, batch_size=2)
    assert [len(texts) for texts in got] == [1, 1, 1]
    for prompt, (text,) in zip(PROMPTS, got, strict=True):
        assert text == greedy_alone(model, tokenizer, prompt, 6, add_special_tokens=True)


def test_sampling_is_seeded_per_batch(tiny):
    model, tokenizer = tiny
    kwargs = {"num_samples": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "batch_size": 6}
    first = sample(model, tokenizer, PROMPTS, seed=1, **kwargs)
    torch.manual_seed(12345)  # the global RNG state before the call does not matter
    assert sample(model, tokenizer, PROMPTS, seed=1, **kwargs) == first
    assert sample(model, tokenizer, PROMPTS, seed=2, **kwargs) != first
    assert all(len(texts) == 3 for texts in first)


def test_generate_is_the_stripped_reply_to_a_formatted_prompt(tiny):
    model, tokenizer = tiny
    prompt = format_prompt(tokenizer, "Say hello", system="Be brief.")
    (reply,) = generate(model, tokenizer, [prompt], max_new_tokens=5)
    assert reply == greedy_alone(model, tokenizer, prompt, 5, add_special_tokens=False).strip()


def test_greedy_with_several_samples_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(SafealignError, match="num_samples 1"):
        sample(model, tokenizer, PROMPTS, num_samples=2, temperature=0)
