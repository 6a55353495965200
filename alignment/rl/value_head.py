"""A causal LM with a scalar value head on its final hidden states (shared trunk for policy and critic)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ValueHead(nn.Module):
    """``hidden -> scalar``: one linear layer, zero-initialised so the critic starts at V = 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def hidden_size_of(model: Any) -> int:
    """The width of the hidden states that feed the LM head."""
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "in_features", None):
        return int(head.in_features)
    return int(model.config.get_text_config().hidden_size)


class PolicyWithValue(nn.Module):
    """The policy LM (plain or PEFT) plus a :class:`ValueHead`, as one module for optimisers and DDP.

    The value head reads the exact tensor the LM head receives (captured with a forward pre-hook on
    the output embeddings), so it works for any causal LM architecture and follows ``logits_to_keep``.
    """

    def __init__(self, policy: nn.Module, value_head: ValueHead | None = None):
        super().__init__()
        self.policy = policy
        self.value_head = value_head or ValueHead(hidden_size_of(policy))
        self._captured: list[torch.Tensor] = []
        self._capturing = False  # off during generate(), which also runs the LM head
        self.policy.get_output_embeddings().register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if self._capturing:
            self._captured.append(args[0])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)`` for the last ``logits_to_keep`` positions (all when 0)."""
        self._captured.clear()
        self._capturing = True
        try:
            output = self.policy(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=logits_to_keep,
                use_cache=False,
            )
        finally:
            self._capturing = False
        hidden = self._captured[-1]
        self._captured.clear()
        return output.logits, self.value_head(hidden)
