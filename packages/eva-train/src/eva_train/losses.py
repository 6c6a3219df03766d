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


AGGREGATIONS = ("token-mean", "sequence-mean", "constant")


def grpo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *,
              ref_logps: Tensor | None = None, epsilon: float = 0.2, epsilon_high: float | None = None,
              kl_coef: float = 0.0, aggregation: str = "token-mean", normalizer: float | Tensor | None = None,
              entropy: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO's clipped surrogate with a k3 KL penalty to the reference, on sampled tokens only.

    GRPO (Shao et al. 2024, DeepSeekMath, eq. 3), per sampled token t of episode b with the
    episode's advantage A_b (`eva_train.advantages`) and the policy that sampled it (old):

        rho_bt  = exp(logp_bt - old_logp_bt)
        s_bt    = min(rho_bt A_b, clip(rho_bt, 1 - epsilon, 1 + epsilon_high) A_b)
        kl_bt   = exp(ref_bt - logp_bt) - (ref_bt - logp_bt) - 1        (k3, Schulman 2020; eq. 4)
        l_bt    = -s_bt + kl_coef * kl_bt

    `epsilon_high` defaults to `epsilon` (symmetric clip; DAPO's "clip-higher" sets it larger).
    m_bt is 1 on tokens the policy sampled (assistant turns), 0 on prompt, tool turns, images
    and padding. Aggregation:

        token-mean:    L = sum_bt m_bt l_bt / N,  N = `normalizer` or sum_bt m_bt
        sequence-mean: L = sum_b [sum_t m_bt l_bt / sum_t m_bt] / S,  S = `normalizer` or rows with a token
        constant:      L = sum_bt m_bt l_bt / C,  C = `normalizer` (Dr. GRPO, Liu et al. 2025, sec. 3.1)

    With several micro-batches (and ranks) per optimizer step, pass the GLOBAL N (tokens over
    the whole step) or S so that the summed micro-batch losses are the step's mean; each rank's
    gradients are then averaged by data parallelism, so pass N or S divided by the world size.
    "token-mean" is the default (DAPO's token-level loss: a long episode's tokens count as much
    as a short one's); "sequence-mean" is the paper's eq. 3.

    Args:
        logps: [B, T] log-prob of each target token under the policy being trained.
        old_logps: [B, T] the same under the policy that sampled the episode (the rollout
            engine's), no gradient.
        advantages: [B] one advantage per episode.
        mask: [B, T] 1 (or True) on sampled tokens.
        ref_logps: [B, T] under the frozen reference; required when kl_coef > 0.
        epsilon, epsilon_high: lower and upper clip range (paper: 0.2).
        kl_coef: beta; 0 drops the penalty.
        aggregation: "token-mean", "sequence-mean" or "constant".
        normalizer: N, S or C as above (required for "constant").
        entropy: [B, T] the policy's per-token entropy, for the metric only.

    Returns:
        (loss, metrics): the scalar loss and detached masked means over the micro-batch:
        `clip_fraction` (tokens whose clipped term is active: rho < 1 - eps with A < 0, or
        rho > 1 + eps_high with A > 0), `ratio`, `kl` (with a reference), `entropy` (when given),
        and `trained_tokens`.
    """
    _check_token_tensors(logps, mask)
    for name, other in (("old_logps", old_logps), ("ref_logps", ref_logps), ("entropy", entropy)):
        if other is not None and other.shape != logps.shape:
            raise ValueError(f"{name} must be [B, T] like logps {tuple(logps.shape)}, got {tuple(other.shape)}")
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logps.shape[0]}], got {tuple(advantages.shape)}")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if not 0.0 < epsilon < 1.0 or epsilon_high <= 0.0:
        raise ValueError(f"epsilon must be in (0, 1) and epsilon_high > 0, got {epsilon}, {epsilon_high}")
    if kl_coef < 0.0 or (kl_coef > 0.0 and ref_logps is None):
        raise ValueError(f"kl_coef must be >= 0 and needs ref_logps when > 0, got {kl_coef}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if aggregation == "constant" and normalizer is None:
        raise ValueError("aggregation 'constant' needs the normalizer (Dr. GRPO's constant)")

    m = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype)[:, None]
    ratio = (logps - old_logps.detach()).exp()
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    per_token = -(ratio * adv).minimum(clipped * adv)
    kl = None
    if ref_logps is not None:
        delta = ref_logps.detach() - logps
        kl = delta.exp() - delta - 1.0
        if kl_coef > 0.0:
            per_token = per_token + kl_coef * kl
    masked = per_token * m
    n_tokens = m.sum()
    if aggregation == "sequence-mean":
        per_row = m.sum(dim=1)
        rows = per_row > 0
        row_sum = (masked.sum(dim=1)[rows] / per_row[rows]).sum()
        loss = row_sum / (rows.sum().clamp(min=1) if normalizer is None else normalizer)
    else:
        loss = masked.sum() / (n_tokens.clamp(min=1) if normalizer is None else normalizer)

    def masked_mean(x: Tensor) -> Tensor:
        return ((x * m).sum() / n_tokens.clamp(min=1)).detach()

    is_clipped = ((ratio < 1.0 - epsilon) & (adv < 0)) | ((ratio > 1.0 + epsilon_high) & (adv > 0))
    metrics = {"clip_fraction": masked_mean(is_clipped.to(logps.dtype)), "ratio": masked_mean(ratio),
               "trained_tokens": n_tokens.detach()}
    if kl is not None:
        metrics["kl"] = masked_mean(kl)
    if entropy is not None:
        metrics["entropy"] = masked_mean(entropy)
    return loss, metrics
