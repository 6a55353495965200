"""The log-likelihood engine against a deliberately simple reference: one request at a time, no padding,
no cache, full logits, log_softmax."""

from __future__ import annotations

import pytest
import torch

from alignment.errors import SafealignError
from alignment.evaluation.engine import LoglikEngine
from alignment.models import load_model

REQUESTS = [
    ("", "The nurse said hello."),
    ("", "Everyone knows the answer is Paris."),
    ("Q: What is 2 + 2?\nA:", " It is 4."),
    ("Q: What is 2 + 2?\nA:", " 5"),
    ("Q: What is 2 + 2?\nA:", " I'm not sure, but I'll check."),
    ("The doctor ", "wrote a long story about the city."),  # trailing space moves to the continuation
    ("The doctor", " saw"),
    ("", "The nurse said hello."),  # a duplicate
    ("Hello!", " Thank you."),
    ("My neighbor thinks that everyone deserves respect. The students asked", " why the sky is blue."),
    ("My neighbor thinks that everyone deserves respect. The students asked", " how to cook rice."),
    ("A", "."),
]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_model(tiny_model, device="cpu")


def simple_logprobs(model, context_ids, continuation_ids) -> list[float]:
    """The reference: one unpadded forward over context + continuation, token by token."""
    ids = torch.tensor([list(context_ids) + list(continuation_ids)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(context_ids) - 1
    return [logprobs[start + j, tok].item() for j, tok in enumerate(continuation_ids)]


def simple_greedy(model, context_ids, continuation_ids) -> bool:
    ids = torch.tensor([list(context_ids) + list(continuation_ids)])
    with torch.no_grad():
        top = model(ids).logits[0].argmax(-1)
    start = len(context_ids) - 1
    return all(top[start + j].item() == tok for j, tok in enumerate(continuation_ids))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_equals_one_at_a_time(tiny, padding_side, share_prefix, batch_size):
    model, tokenizer = tiny
    engine = LoglikEngine(
        model,
        tokenizer,
        padding_side=padding_side,
        share_prefix=share_prefix,
        batch_size=batch_size,
        greedy=True,
    )
    encoded = engine.encode(REQUESTS)
    results = engine.loglikelihood(REQUESTS)
    assert len(results) == len(REQUESTS)
    for (ctx, cont), got in zip(encoded, results, strict=True):
        want = simple_logprobs(model, ctx, cont)
        assert got.n_tokens == len(cont)
        assert got.token_logprobs == pytest.approx(want, abs=1e-5)
        assert got.logprob == pytest.approx(sum(want), abs=1e-5)
        assert got.greedy == simple_greedy(model, ctx, cont)


def test_greedy_continuations_are_recognised(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer, greedy=True)
    ((ctx, _),) = engine.encode([("Hello!", " x")])
    ids = list(ctx)
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    greedy_cont = tuple(ids[len(ctx) :])
    other = (greedy_cont[0], (greedy_cont[1] + 1) % len(tokenizer), greedy_cont[2])
    got, not_greedy = engine.loglikelihood_tokens([(ctx, greedy_cont), (ctx, other)])
    assert got.greedy is True and not_greedy.greedy is False
    assert LoglikEngine(model, tokenizer).loglikelihood_tokens([(ctx, greedy_cont)])[0].greedy is None


def test_small_token_budget_still_exact(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer, max_batch_tokens=8, padding_side="left")
    encoded = engine.encode(REQUESTS)
    for (ctx, cont), got in zip(encoded, engine.loglikelihood(REQUESTS), strict=True):
        assert got.token_logprobs == pytest.approx(simple_logprobs(model, ctx, cont), abs=1e-5)
    assert engine.stats["forwards"] > 5


def test_shared_prefix_runs_each_context_once(tiny):
    model, tokenizer = tiny
    shared = LoglikEngine(model, tokenizer, share_prefix=True)
    plain = LoglikEngine(model, tokenizer, share_prefix=False)
    shared.loglikelihood(REQUESTS)
    plain.loglikelihood(REQUESTS)
    assert shared.stats["forward_tokens"] < plain.stats["forward_tokens"]
    assert shared.stats["scored_tokens"] == plain.stats["scored_tokens"]


def test_duplicates_are_scored_once(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer)
    results = engine.loglikelihood(REQUESTS)
    assert engine.stats["requests"] == len(REQUESTS)
    assert engine.stats["unique"] == len(REQUESTS) - 1
    assert results[0] == results[7]


def test_tokenization_rules(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer)
    (ctx, cont), (ctx2, cont2), (ctx3, cont3) = engine.encode(
        [("", "The nurse said hello."), ("The doctor ", "saw"), ("The doctor", " saw")]
    )
    assert ctx == (engine.prefix_id,)  # an empty context gets the prefix token
    assert tokenizer.decode(cont) == "The nurse said hello."
    assert (ctx2, cont2) == (ctx3, cont3)  # trailing whitespace belongs to the continuation
    assert tokenizer.decode(cont2) == " saw"
    assert tokenizer.bos_token_id == engine.prefix_id  # "auto" picks BOS when there is one


def test_long_context_is_cut_on_the_left(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer, max_length=16)
    ((ctx, cont),) = engine.encode([("word " * 40, "end")])
    assert len(ctx) + len(cont) == 16
    (got,) = engine.loglikelihood([("word " * 40, "end")])
    assert got.token_logprobs == pytest.approx(simple_logprobs(model, ctx, cont), abs=1e-5)
    with pytest.raises(SafealignError, match="window"):
        engine.encode([("", "word " * 40)])


def test_bad_requests_fail_clearly(tiny):
    model, tokenizer = tiny
    engine = LoglikEngine(model, tokenizer)
    with pytest.raises(SafealignError, match="request 1: the continuation is empty"):
        engine.encode([("a", "b"), ("a", "")])
    with pytest.raises(SafealignError, match="prefix token"):
        LoglikEngine(model, tokenizer, prefix_token="<no-such-token>")


def test_peft_adapter_matches_its_merged_model(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(load_model(model.name_or_path, device="cpu")[0], config).eval()
    engine = LoglikEngine(peft_model, tokenizer, padding_side="left")
    results = engine.loglikelihood(REQUESTS)
    merged = peft_model.merge_and_unload()
    reference = LoglikEngine(model, tokenizer).loglikelihood(REQUESTS)
    for (ctx, cont), got in zip(engine.encode(REQUESTS), results, strict=True):
        assert got.token_logprobs == pytest.approx(simple_logprobs(merged, ctx, cont), abs=1e-5)
    assert any(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(results, reference, strict=True))
