"""Group-relative advantages for GRPO: each episode's reward against its group of G samples.

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3 and section 4.1.2, "outcome supervision") samples
G episodes per prompt and gives every sampled token of episode i the same advantage, its
reward normalised within the group. Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
Training", section 3.1) drops the division by the group's standard deviation, which up-weights
groups that are almost all right or all wrong; `scale_by_std=False` follows it.

The standard deviation is the sample one (Bessel's correction, torch's default), as TRL and
verl compute it. A group whose rewards are all equal carries no signal and gets 0 exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """A_i = (r_i - mean_g(r)) / (std_g(r) + eps), or r_i - mean_g(r) without `scale_by_std`.

    Args:
        rewards: [B] rewards, B = n_prompts * group_size, the G samples of a prompt consecutive
            (rows g*G .. g*G + G - 1 are prompt g's).
        group_size: G, at least 2 (one sample has no group to compare with).
        scale_by_std: divide by the group's sample standard deviation (GRPO) or not (Dr. GRPO).
        eps: added to the standard deviation.

    Returns:
        [B] advantages, float32 (rewards' dtype when floating); 0 for every member of a group
        whose rewards are all equal.
    """
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [B], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite")
    r = rewards.view(-1, group_size)
    r = r if r.is_floating_point() else r.float()
    centred = r - r.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    flat = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(centred), centred).view(-1)
