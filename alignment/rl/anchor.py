"""PPO-ptx on the reference model's own text: a language-modelling loss that anchors the policy on neutral
prompts while PPO moves it on the reward's prompts.

InstructGPT (Ouyang et al. 2022) mixes pretraining gradients into PPO to limit regressions on ordinary
text. Without a pretraining corpus, the reference model's continuations of neutral prompts serve: the
negative log-likelihood of those continuations under the policy is, up to a constant, the KL from the
reference to the policy on those prompts, so the loss pulls the policy back wherever PPO moved its
ordinary language modelling. Every optimiser step gets fresh continuations of a seeded draw of the
anchor prompts: samples seen again are memorised, which lowers the loss on them while the policy
drifts from the reference everywhere else. The reference never changes, so the continuations of several
iterations can be sampled ahead in one batch: the same distribution, at a fraction of the cost per
continuation on a CPU, where sampling a small batch is bound by reading the weights once per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alignment.rl.losses import logprobs_from_logits
from alignment.rl.rollout import policy_forward, sample_padded


@dataclass
class Anchor:
    """Reference continuations of the anchor prompts (all ``(N, ...)``, prompts left-padded)."""

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def rows(self, start: int, stop: int) -> Anchor:
        """Rows ``start:stop``, without the prompt columns that are padding in every one of them.

        >>> ids, mask = torch.tensor([[0, 7], [5, 6]]), torch.tensor([[0, 1], [1, 1]])
        >>> a = Anchor(ids, mask, torch.ones(2, 1), torch.ones(2, 1))
        >>> a.rows(0, 1).query_ids
        tensor([[7]])
        """
        mask = self.query_mask[start:stop]
        first = int(mask.any(dim=0).long().argmax())  # left padding: the first column any row uses
        return Anchor(
            self.query_ids[start:stop, first:],
            mask[:, first:],
            self.response_ids[start:stop],
            self.response_mask[start:stop],
        )


def sample_anchor(
    reference: Any,
    token_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    device: Any,
) -> Anchor:
    """One continuation per prompt from ``reference`` at temperature 1, with no top-k or top-p (the loss
    then estimates the KL from the reference)."""
    query_ids, query_mask, responses, mask, _ = sample_padded(
        reference,
        token_ids,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        device=device,
    )
    return Anchor(query_ids, query_mask, responses, mask)


def anchor_nll(model: Any, anchor: Anchor, idx: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per response token of the anchor's rows ``idx`` under the policy (a
    :class:`~alignment.rl.value_head.PolicyWithValue`) at temperature 1."""
    mask = anchor.response_mask[idx]
    width = max(int(mask.sum(dim=1).max()), 1)
    mask, response_ids = mask[:, :width], anchor.response_ids[idx, :width]
    logits, _ = policy_forward(model, anchor.query_ids[idx], anchor.query_mask[idx], response_ids, mask, 1.0)
    logprobs = logprobs_from_logits(logits, response_ids)
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1)
