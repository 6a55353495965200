"""Batched log-likelihood of continuations given contexts, for any causal LM (plain, merged or PEFT).

A request is a ``(context, continuation)`` pair of strings; the engine returns the log-probability of
the continuation's tokens given the context. How it stays exact and fast:

* **Tokenization.** Trailing whitespace of the context moves to the continuation; the pair is tokenized
  as one string and split where the context's own tokens end (when the joint tokenization does not
  start with them, the continuation is tokenized alone). No special tokens are added, except a
  *prefix token*: the BOS the tokenizer would add by itself, and for an empty context always one token
  (BOS, else EOS) so the first continuation token is scored too.
* **Deduplication.** Identical token sequences are scored once.
* **Batches.** Requests are sorted by length (longest first) and cut into batches under a token budget,
  padded on the right (default) or left with an attention mask and explicit position ids (so padding
  never shifts positions), and the vocabulary projection runs only where a continuation token is
  predicted (``logits_to_keep`` with a boolean mask, when the model supports it).
* **Shared prefixes.** Continuations that share a context (multiple choice: HellaSwag endings, BBQ and
  TruthfulQA answers, StereoSet candidates) run the context once; its key/value cache is reused for
  every continuation.

Everything is checked in ``tests/test_eval_engine.py`` against a one-request-at-a-time loop with no
padding.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from alignment.errors import SafealignError

Tokens = tuple[int, ...]


@dataclass(frozen=True)
class Scored:
    """Log-likelihood of one continuation: the sum, one value per token, and (when the engine tracks it)
    whether greedy decoding would have produced exactly this continuation."""

    logprob: float
    token_logprobs: tuple[float, ...]
    greedy: bool | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_logprob(self) -> float:
        """Average log-probability per token (the log of the geometric mean token probability)."""
        return self.logprob / max(1, self.n_tokens)


def all_greedy(flags: Sequence[bool | None]) -> bool | None:
    """All true, or None when greedy matches were not tracked."""
    return None if any(f is None for f in flags) else all(flags)


def _model_max_length(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 2048


def _base_forward(model: Any) -> Callable:
    get_base = getattr(model, "get_base_model", None)
    return (get_base() if callable(get_base) else model).forward


class LoglikEngine:
    """Scores ``(context, continuation)`` requests with one model.

    Args:
        model: a causal LM in eval mode (a PEFT model works the same way).
        tokenizer: its tokenizer.
        batch_size: most rows per forward pass.
        max_batch_tokens: most padded tokens (rows x longest row) per forward pass.
        padding_side: ``right`` or ``left``; the results are the same, the speed can differ.
        share_prefix: run a context shared by several continuations once and reuse its cache.
        prefix_token: ``auto`` (BOS, else EOS), ``bos``, ``eos``, or a token string.
        max_length: longest sequence; longer contexts are cut on the left (default: the model's limit).
        progress: called with the number of requests finished after each batch.
        greedy: also record whether each continuation is the greedy one (an extra pass over the logits).
        forward_overhead: the fixed cost of one forward pass, in tokens' worth of compute; batching
            trades it against padding.

    >>> # engine = LoglikEngine(model, tokenizer)
    >>> # engine.loglikelihood([("", "The nurse said hello."), ("Q: 2+2?\\nA:", " 4")])[1].logprob
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 64,
        max_batch_tokens: int = 4096,
        padding_side: str = "right",
        share_prefix: bool = True,
        prefix_token: str = "auto",
        max_length: int | None = None,
        progress: Callable[[int], None] | None = None,
        forward_overhead: int = 48,
        greedy: bool = False,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be positive")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.padding_side = padding_side
        self.share_prefix = share_prefix
        self.max_length = max_length or _model_max_length(model, tokenizer)
        self.progress = progress
        self.forward_overhead = forward_overhead
        self.greedy = greedy
        self.device = next(model.parameters()).device
        self.pad_id = self._pad_id()
        self.prefix_id = self._prefix_id(prefix_token)
        self.adds_bos = self._tokenizer_adds_bos()
        self._keep_mask: bool | None = None
        self.stats = {"requests": 0, "unique": 0, "forward_tokens": 0, "scored_tokens": 0, "forwards": 0}

    # -- tokenization -------------------------------------------------------------------------------

    def _pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if value is not None:
                return int(value)
        return 0

    def _prefix_id(self, prefix_token: str) -> int:
        tok = self.tokenizer
        if prefix_token == "auto":
            value = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        elif prefix_token in ("bos", "eos"):
            value = getattr(tok, f"{prefix_token}_token_id")
        else:
            value = tok.convert_tokens_to_ids(prefix_token)
            if value == tok.unk_token_id and prefix_token != tok.unk_token:
                value = None
        if value is None:
            raise SafealignError(
                f"prefix token {prefix_token!r} does not exist in this tokenizer: pass prefix_token='eos' "
                "or a token the vocabulary has"
            )
        return int(value)

    def prefix_info(self) -> dict[str, Any]:
        """The token an empty context is conditioned on, by text and id (for the results file)."""
        return {
            "prefix_token": self.tokenizer.convert_ids_to_tokens(self.prefix_id),
            "prefix_token_id": self.prefix_id,
        }

    def _tokenizer_adds_bos(self) -> bool:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return False
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[0] == bos

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def encode(self, requests: Sequence[tuple[str, str]]) -> list[tuple[Tokens, Tokens]]:
        """Token ids ``(context, continuation)`` for each request, as the engine will score them."""
        contexts, continuations = [], []
        for i, (context, continuation) in enumerate(requests):
            if not isinstance(context, str) or not isinstance(continuation, str):
                raise SafealignError(f"request {i}: context and continuation must be strings")
            stripped = context.rstrip()
            continuation = context[len(stripped) :] + continuation
            if not continuation:
                raise SafealignError(f"request {i}: the continuation is empty, there is nothing to score")
            contexts.append(stripped)
            continuations.append(continuation)
        with_context = [i for i, c in enumerate(contexts) if c]
        ctx_ids = dict(
            zip(with_context, self._encode_texts([contexts[i] for i in with_context]), strict=True)
        )
        whole_ids = dict(
            zip(
                with_context,
                self._encode_texts([contexts[i] + continuations[i] for i in with_context]),
                strict=True,
            )
        )
        alone_ids = self._encode_texts(continuations)
        encoded = []
        for i in range(len(contexts)):
            ctx, cont = ctx_ids.get(i, []), alone_ids[i]
            whole = whole_ids.get(i)
            if whole is not None and len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
                cont = whole[len(ctx) :]
            if not cont:
                raise SafealignError(f"request {i}: the continuation {continuations[i]!r} has no tokens")
            if not ctx or self.adds_bos:
                ctx = [self.prefix_id, *ctx]
            if len(cont) >= self.max_length:
                raise SafealignError(
                    f"request {i}: the continuation has {len(cont)} tokens, more than the model's "
                    f"{self.max_length}-token window; shorten the text"
                )
            overflow = len(ctx) + len(cont) - self.max_length
            if overflow > 0:
                ctx = ctx[overflow:]
            encoded.append((tuple(ctx), tuple(cont)))
        return encoded

    # -- scoring ------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        """Score each ``(context, continuation)``; the results are in the order of ``requests``."""
        return self.loglikelihood_tokens(self.encode(requests))

    @contextmanager
    def about(self, topic: str | None) -> Iterator[None]:
        """Score the requests made inside as about ``topic`` (a CrowS-Pairs bias type). The plain model
        ignores it; Self-Debias uses that topic's prefix only."""
        yield

    def loglikelihood_tokens(self, encoded: Sequence[tuple[Tokens, Tokens]]) -> list[Scored]:
        """Score already tokenized ``(context_ids, continuation_ids)`` pairs (context non-empty)."""
        unique = list(dict.fromkeys((tuple(c), tuple(t)) for c, t in encoded))
        if any(not c or not t for c, t in unique):
            raise SafealignError("every request needs at least one context token and one continuation token")
        self.stats["requests"] += len(encoded)
        self.stats["unique"] += len(unique)
        by_context: dict[Tokens, list[Tokens]] = {}
        for ctx, cont in unique:
            by_context.setdefault(ctx, []).append(cont)
        shared = {
            c: conts for c, conts in by_context.items() if self.share_prefix and len(conts) > 1 and len(c) > 1
        }
        single = [(c, t) for c, conts in by_context.items() if c not in shared for t in conts]
        results: dict[tuple[Tokens, Tokens], Scored] = {}
        with torch.inference_mode():
            self._score_full(single, results)
            self._score_shared(shared, results)
        return [results[(tuple(c), tuple(t))] for c, t in encoded]

    def batches(self, lengths: list[int], extra: Callable[[int], int] | None = None) -> list[list[int]]:
        """Cut indices ``0..n-1`` (rows already sorted by decreasing length) into consecutive batches.

        Minimises padded tokens plus ``forward_overhead`` per forward pass (dynamic programming over
        the cut points), within ``batch_size`` rows and ``max_batch_tokens`` padded tokens (plus
        ``extra(rows)``, e.g. the cache a batch attends to) per batch.
        """
        n = len(lengths)
        best = [0.0] + [float("inf")] * n
        cut = [0] * (n + 1)
        for end in range(1, n + 1):
            for start in range(end - 1, max(-1, end - 1 - self.batch_size), -1):
                rows, width = end - start, lengths[start]
                if rows > 1 and rows * width + (extra(rows) if extra else 0) > self.max_batch_tokens:
                    break
                cost = best[start] + self.forward_overhead + rows * width
                if cost < best[end]:
                    best[end], cut[end] = cost, start
        batches, end = [], n
        while end > 0:
            batches.append(list(range(cut[end], end)))
            end = cut[end]
        return batches[::-1]

    def _supports_keep_mask(self) -> bool:
        """Whether the model honours a boolean ``logits_to_keep`` (probed once on two tokens)."""
        if self._keep_mask is None:
            ok = False
            if "logits_to_keep" in inspect.signature(_base_forward(self.model)).parameters:
                try:
                    from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401

                    ids = torch.full((1, 2), self.prefix_id, dtype=torch.long, device=self.device)
                    keep = torch.tensor([[False, True]], device=self.device)
                    logits = self.model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits
                    ok = logits.dim() == 2 and logits.shape[0] == 1
                except (ImportError, TypeError, IndexError, RuntimeError, ValueError):
                    ok = False
            self._keep_mask = ok
        return self._keep_mask

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        keep: torch.Tensor,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        """Logits at the ``keep`` positions (row by row, shape ``[n_keep, vocab]``) and the model output."""
        self.stats["forwards"] += 1
        self.stats["forward_tokens"] += int(mask[:, -ids.shape[1] :].sum())  # new tokens, not the cache
        if self._supports_keep_mask():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, **kwargs
            )
            return out.logits, out
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
        return out.logits[keep], out

    def _gather(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[bool]]:
        logits = logits.float()
        target_logits = logits.gather(-1, targets[:, None]).squeeze(-1)
        logprobs = target_logits - torch.logsumexp(logits, dim=-1)
        self.stats["scored_tokens"] += int(targets.numel())
        if not self.greedy:
            return logprobs.tolist(), [None] * len(targets)
        return logprobs.tolist(), (logits.argmax(dim=-1) == targets).tolist()

    def pack(self, rows: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Pad token rows into ``(ids, attention mask, offsets)``; offsets say where each row starts."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        offsets = []
        for i, row in enumerate(rows):
            start = width - len(row) if left else 0
            ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, start : start + len(row)] = 1
            offsets.append(start)
        return ids, mask, offsets

    def continuation_logits(
        self, items: Sequence[tuple[Tokens, Tokens]]
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Batches of ``(indices into items, logits, targets)``: the logits (``[tokens, vocab]``) at every
        position that predicts a continuation token, for one forward over ``context + continuation``.

        Items are taken longest first; within a batch, rows follow ``indices`` and each row contributes
        ``len(continuation)`` consecutive logits.
        """
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]), reverse=True)
        lengths = [len(items[i][0]) + len(items[i][1]) - 1 for i in order]
        for batch in self.batches(lengths):
            chosen = [order[j] for j in batch]
            rows = [list(items[i][0] + items[i][1][:-1]) for i in chosen]
            ids, mask, offsets = self.pack(rows, left=self.padding_side == "left")
            keep = torch.zeros_like(mask, dtype=torch.bool)
            targets = []
            for r, i in enumerate(chosen):
                ctx, cont = items[i]
                start = offsets[r] + len(ctx) - 1
                keep[r, start : start + len(cont)] = True
                targets.extend(cont)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits, _ = self._forward(
                ids.to(self.device),
                mask.to(self.device),
                positions.to(self.device),
                keep.to(self.device),
                use_cache=False,
            )
            yield chosen, logits, torch.tensor(targets, device=logits.device)

    def _score_full(self, items: list[tuple[Tokens, Tokens]], results: dict) -> None:
        """One forward per request over ``context + continuation`` (the last token is never an input)."""
        for chosen, logits, targets in self.continuation_logits(items):
            logprobs, greedy = self._gather(logits, targets)
            pos = 0
            for i in chosen:
                n = len(items[i][1])
                lp = logprobs[pos : pos + n]
                results[items[i]] = Scored(float(sum(lp)), tuple(lp), all_greedy(greedy[pos : pos + n]))
                pos += n
            if self.progress:
                self.progress(len(chosen))

    def _score_shared(self, groups: dict[Tokens, list[Tokens]], results: dict) -> None:
        """Contexts run once (left padded, cache kept); their continuations run on a copy of that cache."""
        contexts = sorted(groups, key=len, reverse=True)
        for batch in self.batches([len(c) for c in contexts]):
            self._score_context_batch([contexts[i] for i in batch], groups, results)

    def _score_context_batch(self, batch_contexts: list[Tokens], groups: dict, results: dict) -> None:
        ids, mask, _ = self.pack([list(c) for c in batch_contexts], left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = torch.zeros_like(mask, dtype=torch.bool)
        keep[:, -1] = True
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        last_logits, out = self._forward(ids, mask, positions, keep.to(self.device), use_cache=True)
        cache = out.cache
        if cache is None or not hasattr(cache, "layers"):
            self.share_prefix = False
            self._score_full([(c, t) for c in batch_contexts for t in groups[c]], results)
            return
        last_logprobs = torch.log_softmax(last_logits.float(), dim=-1)
        last_greedy = last_logits.argmax(dim=-1) if self.greedy else None
        rows = [(r, ctx, cont) for r, ctx in enumerate(batch_contexts) for cont in groups[ctx]]
        first = {}
        for r, ctx, cont in rows:
            greedy = None if last_greedy is None else bool(last_greedy[r] == cont[0])
            first[(ctx, cont)] = (float(last_logprobs[r, cont[0]]), greedy)
        self.stats["scored_tokens"] += len(rows)
        tails = sorted((row for row in rows if len(row[2]) > 1), key=lambda row: len(row[2]), reverse=True)
        context_width = ids.shape[1]
        tail_logprobs: dict[tuple[Tokens, Tokens], tuple[list[float], list[bool]]] = {}
        for part in self.batches([len(t[2]) - 1 for t in tails], extra=lambda n: n * context_width):
            chosen = [tails[i] for i in part]
            index = torch.tensor([r for r, _, _ in chosen], device=self.device)
            tail_ids, tail_mask, _ = self.pack([list(cont[:-1]) for _, _, cont in chosen], left=False)
            tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
            full_mask = torch.cat([mask.index_select(0, index), tail_mask], dim=1)
            start = mask.sum(-1).index_select(0, index)[:, None]
            tail_positions = start + torch.arange(tail_ids.shape[1], device=self.device)[None, :]
            part_cache = copy.copy(cache)
            part_cache.layers = [copy.copy(layer) for layer in cache.layers]
            part_cache.batch_select_indices(index)
            logits, _ = self._forward(
                tail_ids,
                full_mask,
                tail_positions,
                tail_mask.bool(),
                cache=part_cache,
                use_cache=True,
            )
            targets = [tok for _, _, cont in chosen for tok in cont[1:]]
            logprobs, greedy = self._gather(logits, torch.tensor(targets, device=logits.device))
            pos = 0
            for _, ctx, cont in chosen:
                n = len(cont) - 1
                tail_logprobs[(ctx, cont)] = (logprobs[pos : pos + n], greedy[pos : pos + n])
                pos += n
        for _, ctx, cont in rows:
            lp0, g0 = first[(ctx, cont)]
            lps, gs = tail_logprobs.get((ctx, cont), ([], []))
            token_lps = (lp0, *lps)
            results[(ctx, cont)] = Scored(float(sum(token_lps)), tuple(token_lps), all_greedy([g0, *gs]))
        if self.progress:
            self.progress(len(rows))
