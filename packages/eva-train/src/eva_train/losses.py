"""Training losses as pure functions: per-token log-probs and masks in, a scalar loss and metrics out.

No `self`, no logging, no collectives: a stage module computes log-probs (`eva_train.logprobs`),
calls one function here and logs the metrics it returns. Later stages (KTO, GRPO) add their
objectives to this module in the same shape.
"""

from __future__ import annotations

from torch import Tensor


def _check_token_tensors(logps: Tensor, mask: Tensor) -> None:
    if logps.ndim != 2 or logps.shape != mask.shape:
        raise ValueError(f"logps and mask must both be [B, T], got {tuple(logps.shape)} and {tuple(mask.shape)}")


def sft_loss(logps: Tensor, mask: Tensor, *, normalization: str = "tokens") -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood of the trained (assistant) tokens.

    With m_bt in {0, 1} marking the tokens the model must learn (the EVA paper's SFT stage
    imitates the teacher's assistant turns; system, user and tool turns, images included,
    carry no loss):

        tokens:    L = - sum_{b,t} m_bt log p_theta(y_bt | y_<bt) / max(1, sum_{b,t} m_bt)
        sequences: L = - (1 / B') sum_b [ sum_t m_bt log p_bt / sum_t m_bt ],  over the B' rows with a token

    "tokens" (the default, as Hugging Face's causal-LM loss) weighs every trained token equally
    within the micro-batch, so long trajectories count more; "sequences" weighs each trajectory
    equally. With data parallelism each rank normalises its own micro-batch and gradients are
    averaged over ranks.

    Args:
        logps: [B, T] log-probability of each target token under the policy (any value where
            mask is 0).
        mask: [B, T] 1 (or True) where the token is trained, else 0.
        normalization: "tokens" or "sequences".

    Returns:
        (loss, metrics): the scalar loss (differentiable) and detached metrics `nll` (the
        per-token negative log-likelihood of the batch) and `trained_tokens`.
    """
    _check_token_tensors(logps, mask)
    m = mask.to(logps.dtype)
    token_nll = -(logps * m)
    n_tokens = m.sum()
    if normalization == "tokens":
        loss = token_nll.sum() / n_tokens.clamp(min=1)
    elif normalization == "sequences":
        per_row = m.sum(dim=1)
        rows = per_row > 0
        row_loss = token_nll.sum(dim=1)[rows] / per_row[rows]
        loss = row_loss.mean() if bool(rows.any()) else token_nll.sum() * 0.0
    else:
        raise ValueError(f"normalization must be 'tokens' or 'sequences', got {normalization!r}")
    metrics = {
        "nll": (token_nll.sum() / n_tokens.clamp(min=1)).detach(),
        "trained_tokens": n_tokens.detach(),
    }
    return loss, metrics
