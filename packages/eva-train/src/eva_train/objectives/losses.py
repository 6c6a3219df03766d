"""Training losses as pure functions: per-token log-probs and masks in, a scalar loss and metrics out.

No `self`, no logging, no collectives: a stage module computes log-probs (`eva_train.objectives.logprobs`),
calls one function here and logs the metrics it returns. Later stages (KTO, GRPO) add their
objectives to this module in the same shape.
"""

from __future__ import annotations

import warnings

import torch
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


def sequence_logps(logps: Tensor, mask: Tensor) -> Tensor:
    """log pi(y_b | x_b) = sum_t m_bt log p_bt: each row's log-probability of its trained tokens.

    Args:
        logps: [B, T] per-token log-probabilities (any value where mask is 0).
        mask: [B, T] 1 (or True) on the trained tokens.

    Returns:
        [B] sums over the trained tokens (0 for a row without one).
    """
    _check_token_tensors(logps, mask)
    return (logps * mask.to(logps.dtype)).sum(dim=1)


class KTOWeightWarning(UserWarning):
    """lambda_D n_D / (lambda_U n_U) outside the range the KTO paper recommends."""


def kto_weight_ratio(n_desirable: int, n_undesirable: int, *, desirable_weight: float = 1.0,
                     undesirable_weight: float = 1.0) -> float:
    """lambda_D n_D / (lambda_U n_U), with a `KTOWeightWarning` when it leaves [1, 4/3].

    Ethayarajh et al. (2024), section 4.2 ("Data imbalance"): set the weights so that
    lambda_D n_D / (lambda_U n_U) is in [1, 4/3], i.e. desirable examples carry at least as much
    and at most a third more total weight than undesirable ones.

    Returns:
        The ratio (inf when there is no undesirable example).
    """
    if n_desirable < 0 or n_undesirable < 0:
        raise ValueError(f"counts must be non-negative, got {n_desirable}, {n_undesirable}")
    denominator = undesirable_weight * n_undesirable
    ratio = float("inf") if denominator == 0 else desirable_weight * n_desirable / denominator
    if not 1.0 <= ratio <= 4.0 / 3.0:
        warnings.warn(f"KTO weights: lambda_D n_D / (lambda_U n_U) = {desirable_weight} * {n_desirable} / "
                      f"({undesirable_weight} * {n_undesirable}) = {ratio:.3g}, outside [1, 4/3] (Ethayarajh et "
                      "al. 2024, sec. 4.2): adjust desirable_weight or undesirable_weight", KTOWeightWarning,
                      stacklevel=2)
    return ratio


def kto_loss(policy_logps: Tensor, reference_logps: Tensor, desirable: Tensor, *, kl_policy_logps: Tensor,
             kl_reference_logps: Tensor, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Kahneman-Tversky Optimization (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect
    Theoretic Optimization", eq. 7-8) on whole trajectories.

    With x_b the prompt of row b (the turns before its first assistant turn), y_b its completion
    (every later turn; only the assistant tokens are scored, tool turns and images are context):

        implied reward   r_b = log pi_theta(y_b | x_b) - log pi_ref(y_b | x_b)
        reference point  z0  = max(0, (1/G) sum_g [log pi_theta(y_g | x'_g) - log pi_ref(y_g | x'_g)])
        value            v_b = lambda_D sigmoid(beta (r_b - z0))   if row b is desirable
                               lambda_U sigmoid(beta (z0 - r_b))   otherwise
        loss             L   = (1/B) sum_b (lambda_b - v_b)

    z0 is the paper's estimate of KL(pi_theta || pi_ref) from mismatched pairs (x'_g, y_g) of
    the global batch (G pairs, built by the caller: `eva_train.encoding.kl_pairs`), detached as in the
    paper: no gradient flows through it. The loss is the mean over this call's B rows (as TRL's
    `KTOTrainer`: the weighted per-row losses averaged), so data-parallel ranks with equal B
    average to the global batch's mean.

    Args:
        policy_logps: [B] log pi_theta(y_b | x_b), summed over the trained tokens (differentiable).
        reference_logps: [B] log pi_ref(y_b | x_b).
        desirable: [B] bool labels.
        kl_policy_logps: [G] log pi_theta of the global batch's mismatched pairs (any grad ignored).
        kl_reference_logps: [G] log pi_ref of the same pairs.
        beta: the KL penalty's inverse temperature (paper: 0.1 as default; EVA: 0.1).
        desirable_weight, undesirable_weight: lambda_D and lambda_U (see `kto_weight_ratio`).

    Returns:
        (loss, metrics): the scalar loss and detached metrics: `z0`; `reward_desirable`,
        `reward_undesirable` (mean r_b of each label's rows; NaN without such rows), `margin`
        (their difference); `accuracy_desirable` (share of desirable rows with r_b > z0) and
        `accuracy_undesirable` (share of undesirable rows with r_b < z0); `n_desirable`,
        `n_undesirable`. Rewards are r_b in nats, not multiplied by beta.

    Raises:
        ValueError: shapes that do not match, or a global batch of one trajectory (no mismatched pair).
    """
    b = policy_logps.shape[0] if policy_logps.ndim == 1 else -1
    if b < 1 or reference_logps.shape != (b,) or desirable.shape != (b,):
        raise ValueError(f"policy_logps, reference_logps and desirable must be [B] with B >= 1, got "
                         f"{tuple(policy_logps.shape)}, {tuple(reference_logps.shape)}, {tuple(desirable.shape)}")
    if kl_policy_logps.ndim != 1 or kl_reference_logps.shape != kl_policy_logps.shape:
        raise ValueError(f"kl_policy_logps and kl_reference_logps must both be [G], got "
                         f"{tuple(kl_policy_logps.shape)} and {tuple(kl_reference_logps.shape)}")
    if kl_policy_logps.shape[0] < 2:
        raise ValueError("KTO needs at least 2 trajectories in the global batch: its reference point z0 is "
                         "estimated on mismatched (prompt, completion) pairs, which a single trajectory cannot "
                         "form. Raise batch_size (or the number of data-parallel ranks).")
    labels = desirable.to(device=policy_logps.device, dtype=torch.bool)
    z0 = (kl_policy_logps.detach() - kl_reference_logps.detach()).float().mean().clamp(min=0)
    rewards = policy_logps - reference_logps.detach()
    value = torch.where(labels, desirable_weight * torch.sigmoid(beta * (rewards - z0)),
                        undesirable_weight * torch.sigmoid(beta * (z0 - rewards)))
    weight = torch.where(labels, torch.full_like(value, desirable_weight), torch.full_like(value, undesirable_weight))
    loss = (weight - value).mean()

    r = rewards.detach()
    n_d, n_u = labels.sum(), (~labels).sum()
    nan = torch.tensor(float("nan"), device=r.device)
    mean_d = r[labels].mean() if bool(n_d) else nan
    mean_u = r[~labels].mean() if bool(n_u) else nan
    metrics = {
        "z0": z0,
        "reward_desirable": mean_d,
        "reward_undesirable": mean_u,
        "margin": mean_d - mean_u,
        "accuracy_desirable": (r[labels] > z0).float().mean() if bool(n_d) else nan,
        "accuracy_undesirable": (r[~labels] < z0).float().mean() if bool(n_u) else nan,
        "n_desirable": n_d.float(),
        "n_undesirable": n_u.float(),
    }
    return loss, metrics


AGGREGATIONS = ("token-mean", "sequence-mean", "constant")


def grpo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *,
              ref_logps: Tensor | None = None, epsilon: float = 0.2, epsilon_high: float | None = None,
              kl_coef: float = 0.0, aggregation: str = "token-mean", normalizer: float | Tensor | None = None,
              entropy: Tensor | None = None, dual_clip: float | None = 3.0, log_ratio_clamp: float | None = 20.0,
              token_weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO's clipped surrogate with a k3 KL penalty to the reference, on sampled tokens only.

    GRPO (Shao et al. 2024, DeepSeekMath, eq. 3), per sampled token t of episode b with the
    episode's advantage A_b (`eva_train.rl.advantages`) and the policy that sampled it (old):

        rho_bt  = exp(clamp(logp_bt - old_logp_bt, -R, R))
        s_bt    = min(rho_bt A_b, clip(rho_bt, 1 - epsilon, 1 + epsilon_high) A_b)
        s_bt    = max(s_bt, C A_b)                   where A_b < 0 (dual-clip, Ye et al. 2020, eq. 5)
        kl_bt   = exp(ref_bt - logp_bt) - (ref_bt - logp_bt) - 1        (k3, Schulman 2020; eq. 4)
        l_bt    = w_bt (-s_bt) + kl_coef * kl_bt

    `epsilon_high` defaults to `epsilon` (symmetric clip; DAPO's "clip-higher" sets it larger).
    Dual-clip bounds the loss of a token whose ratio exploded while its advantage is negative
    (the plain clip leaves min(rho A, ...) = rho A unbounded there); R bounds the log-ratio so
    that exp never overflows on a token the policy has moved far from. Both follow verl's
    defaults (C = 3, R = 20); at ratio 1 (the first pass on-policy) neither is active. w_bt are
    optional per-token weights, e.g. the capped importance-sampling correction of a sampler whose
    log-probs differ from the trainer's (`token_weights`; TRL's `vllm_importance_sampling_cap`).
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
        dual_clip: C (> 1); None turns dual-clip off.
        log_ratio_clamp: R (> 0); None leaves the log-ratio unclamped.
        token_weights: [B, T] w, no gradient; None is 1 everywhere.

    Returns:
        (loss, metrics): the scalar loss and detached masked means over the micro-batch:
        `clip_fraction` (tokens whose clipped term is active: rho < 1 - eps with A < 0, or
        rho > 1 + eps_high with A > 0), `dual_clip_fraction` (tokens held at C |A|), `ratio`, `kl` (with a reference), `entropy` (when given),
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

    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    if log_ratio_clamp is not None and log_ratio_clamp <= 0.0:
        raise ValueError(f"log_ratio_clamp must be > 0 (or None), got {log_ratio_clamp}")
    if token_weights is not None and token_weights.shape != logps.shape:
        raise ValueError(f"token_weights must be [B, T] like logps {tuple(logps.shape)}, got {tuple(token_weights.shape)}")

    m = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype)[:, None]
    log_ratio = logps - old_logps.detach()
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    per_token = -(ratio * adv).minimum(clipped * adv)
    dual_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip is not None:
        dual_clipped = (adv < 0) & (per_token > -dual_clip * adv)
        per_token = torch.where(adv < 0, per_token.minimum(-dual_clip * adv), per_token)
    if token_weights is not None:
        per_token = per_token * token_weights.detach().to(per_token.dtype)
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
               "dual_clip_fraction": masked_mean(dual_clipped.to(logps.dtype)), "trained_tokens": n_tokens.detach()}
    if kl is not None:
        metrics["kl"] = masked_mean(kl)
    if entropy is not None:
        metrics["entropy"] = masked_mean(entropy)
    return loss, metrics


def sampler_gap(train_logps: Tensor, sampled_logps: Tensor, mask: Tensor, *, threshold: float = 0.1
                ) -> dict[str, Tensor]:
    """How far the rollout engine's log-probs are from the training forward's, on sampled tokens.

    With pi_old taken from the training forward (`GRPOModule`), the sampler's log-probs train
    nothing; this measures the gap they would have put into the ratio (verl's and TRL's
    "mismatch" metrics: different kernels, batch shapes and KV cache in bf16 make it non-zero
    on a GPU even fully on-policy):

        d_bt = |logp_train_bt - logp_sampled_bt|
        mean = sum_bt m_bt d_bt / sum_bt m_bt,   max = max_{m_bt = 1} d_bt
        share = sum_bt m_bt [|exp(logp_train_bt - logp_sampled_bt) - 1| > threshold] / sum_bt m_bt

    Args:
        train_logps, sampled_logps: [B, T] float log-probs of the same tokens.
        mask: [B, T] 1 (or True) on sampled tokens.
        threshold: the ratio deviation counted in `share`.

    Returns:
        Detached {"mean", "max", "share"}; all 0 without a sampled token.
    """
    _check_token_tensors(train_logps, mask)
    if sampled_logps.shape != train_logps.shape:
        raise ValueError(f"sampled_logps must be [B, T] like train_logps, got {tuple(sampled_logps.shape)}")
    m = mask.bool()
    diff = (train_logps.detach().float() - sampled_logps.float())[m]
    if diff.numel() == 0:
        zero = torch.zeros((), device=train_logps.device)
        return {"mean": zero, "max": zero, "share": zero}
    return {"mean": diff.abs().mean(), "max": diff.abs().max(),
            "share": ((diff.exp() - 1.0).abs() > threshold).float().mean()}


def importance_weights(old_logps: Tensor, sampled_logps: Tensor, *, cap: float) -> Tensor:
    """Truncated importance sampling of a sampler that is not the trained policy (Yao et al.
    2025, "Your efficient RL framework secretly brings you off-policy RL training"; TRL's
    `vllm_importance_sampling_cap`):

        w_bt = min(exp(old_logp_bt - sampled_logp_bt), cap)

    Args:
        old_logps: [B, T] pi_old from the training forward.
        sampled_logps: [B, T] the rollout engine's log-probs of the same tokens.
        cap: the largest weight (TRL: 3).

    Returns:
        [B, T] detached weights for `grpo_loss(token_weights=)`.
    """
    if cap <= 0:
        raise ValueError(f"the importance-sampling cap must be > 0, got {cap}")
    if old_logps.shape != sampled_logps.shape:
        raise ValueError(f"old and sampled log-probs differ in shape: {tuple(old_logps.shape)}, "
                         f"{tuple(sampled_logps.shape)}")
    return (old_logps.detach().float() - sampled_logps.float()).exp().clamp(max=cap)
