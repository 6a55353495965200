"""``safealign generate --model SPEC "prompt"``: a quick look at what a model says."""

from __future__ import annotations

import argparse
import time

from alignment.console import err, out
from alignment.errors import SafealignError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a reply from a model (uses its chat template when it has one)",
        description="Generate a reply to PROMPT. Greedy by default; --temperature > 0 samples with --seed.",
    )
    parser.add_argument("prompt", nargs="+", help="the prompt text (several words are joined with spaces)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model spec (default: %(default)s)")
    parser.add_argument("--system", default=None, help="system message for chat models")
    parser.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: by device)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow code shipped with a hub model"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alignment.generation import format_prompt, generate
    from alignment.models import load_model

    if args.max_new_tokens < 1:
        raise SafealignError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise SafealignError("--temperature must be >= 0 and --top-p in (0, 1]")
    t0 = time.perf_counter()
    with err.status(f"loading {args.model} ..."):
        model, tokenizer = load_model(
            args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
        )
    loaded = time.perf_counter() - t0
    text = format_prompt(
        tokenizer, " ".join(args.prompt), system=args.system, chat=False if args.no_chat_template else None
    )
    t1 = time.perf_counter()
    (reply,) = generate(
        model,
        tokenizer,
        [text],
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    out.print(reply, markup=False, highlight=False)
    err.print(
        f"[dim]loaded in {loaded:.1f}s, generated in {time.perf_counter() - t1:.1f}s on {model.device}[/]"
    )
    return 0
