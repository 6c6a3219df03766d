"""Choosing the next token from logits: greedy, or temperature plus nucleus (top-p) sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def next_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    suppress: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row.

    Greedy when temperature <= 0: argmax over the logits. Otherwise sample from
    p = softmax(logits / temperature) restricted to the nucleus: the smallest set of
    most likely tokens whose probabilities sum to at least top_p (Holtzman et al., 2020),
    renormalised. Suppressed ids get probability 0 (logit -inf) either way.

    Args:
        logits: [B, V], any float dtype (computed in float32).
        temperature: 0 for greedy.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        suppress: token ids never chosen.
        generator: RNG for sampling (seeded by the caller for reproducible runs).

    Returns:
        long [B].
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scores = logits.float()
    if len(suppress):
        scores = scores.clone()
        scores[:, list(suppress)] = float("-inf")
    if temperature <= 0.0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep a token when the mass before it is below top_p: the top token always stays.
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
