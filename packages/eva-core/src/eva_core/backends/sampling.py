"""Choosing the next token from logits (greedy, or temperature plus nucleus sampling), the
log-probability of the choice, and the seeds that make sampling reproducible per sample.

Holds `sampling_logprobs` (the tempered log-softmax: the one formula of the distribution sampled
from, which RL training also scores sampled tokens with, so the two agree), `sample_rows`,
`next_tokens` and `sample_seed`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def sampling_logprobs(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    suppress: Sequence[int] = (),
) -> torch.Tensor:
    """Log-probabilities of the distribution the next token is drawn from.

        log p = log_softmax(z / T) restricted to the nucleus, renormalised,

    with T = temperature (1 for greedy, whose choice is the argmax of the same scores) and the
    nucleus the smallest set of most likely tokens whose probabilities sum to at least top_p
    (Holtzman et al., 2020). Suppressed ids and ids outside the nucleus get -inf.

    Args:
        logits: [B, V], any float dtype (computed in float32).
        temperature: 0 for greedy.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        suppress: token ids never chosen.

    Returns:
        [B, V] float32.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scores = logits.float()
    if len(suppress):
        scores = scores.index_fill(1, torch.as_tensor(list(suppress), device=scores.device), float("-inf"))
    if temperature > 0.0 and temperature != 1.0:
        scores = scores / temperature
    logp = torch.log_softmax(scores, dim=-1)
    if top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
        # Keep a token when the mass before it is below top_p: the top token always stays.
        probs = sorted_logp.exp()
        before = probs.cumsum(dim=-1) - probs
        sorted_logp = sorted_logp.masked_fill(before >= top_p, float("-inf"))
        sorted_logp = sorted_logp - torch.logsumexp(sorted_logp, dim=-1, keepdim=True)
        logp = torch.empty_like(logp).scatter_(-1, order, sorted_logp)
    return logp


def sample_rows(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    suppress: Sequence[int] = (),
    generators: Sequence[torch.Generator | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-probability under `sampling_logprobs`.

    Each row draws from its own generator, so a row's tokens do not depend on the other rows
    of the batch (a sample is the same alone or batched).

    Args:
        logits: [B, V].
        temperature, top_p, suppress: see `sampling_logprobs`.
        generators: B generators (None entries draw from torch's global generator); None: all global.

    Returns:
        (tokens long [B], logprobs float32 [B]).
    """
    logp = sampling_logprobs(logits, temperature=temperature, top_p=top_p, suppress=suppress)
    if temperature <= 0.0:
        tokens = logp.argmax(dim=-1)
    else:
        generators = generators if generators is not None else [None] * logp.shape[0]
        if len(generators) != logp.shape[0]:
            raise ValueError(f"{len(generators)} generators for {logp.shape[0]} rows")
        probs = logp.exp()
        tokens = torch.cat([torch.multinomial(probs[b], num_samples=1, generator=g)
                            for b, g in enumerate(generators)])
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def next_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    suppress: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row (`sample_rows` with one generator for the whole batch).

    Args:
        logits: [B, V], any float dtype (computed in float32).
        temperature: 0 for greedy.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        suppress: token ids never chosen.
        generator: RNG for sampling (seeded by the caller for reproducible runs).

    Returns:
        long [B].
    """
    logp = sampling_logprobs(logits, temperature=temperature, top_p=top_p, suppress=suppress)
    if temperature <= 0.0:
        return logp.argmax(dim=-1)
    return torch.multinomial(logp.exp(), num_samples=1, generator=generator).squeeze(-1)


def sample_seed(seed: int, key: tuple[int, ...] | str, turn: int) -> int:
    """A 63-bit seed for one turn of one sample: SHA-256 of (seed, key, turn).

    Distinct keys (such as (step, prompt, sample)) and turns give unrelated streams; the same
    triple always gives the same stream, whichever batch or process the sample runs in.
    """
    digest = hashlib.sha256(repr((int(seed), key, int(turn))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
