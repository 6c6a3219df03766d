"""A GRPO step's data between its phases: what training reads and what callbacks receive.

Holds `StepRollout` (the scored episodes with their training sequences and advantages),
`step_rollout` (scores -> advantages -> sequences), `loss_normalizer` (the objective's N agreed
across ranks) and `StepRecord` (the frozen record a training step hands its callbacks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from eva_train.encoding.episodes import EncodedEpisode, encode_episode
from eva_train.model.distributed import all_gather_rows
from eva_train.rl.advantages import group_advantages
from eva_train.rl.rollouts import RolloutSpec
from eva_train.rl.scoring import ScoredEpisode, ScoredRollouts, episode_metrics


@dataclass
class StepRollout:
    """One step's sampled episodes with what training reads.

    Attributes:
        scored: every episode of the step, prompt by prompt, G each (sample order).
        encoded: the training sequences of the episodes that have turns.
        advantages: [len(encoded)] float32, one per encoded episode.
        metrics: the rollout's metrics (rewards, rates, timings).
    """

    scored: list[ScoredEpisode]
    encoded: list[EncodedEpisode]
    advantages: Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.advantages.shape != (len(self.encoded),):
            raise ValueError(f"{tuple(self.advantages.shape)} advantages for {len(self.encoded)} encoded episodes")


def step_rollout(played: ScoredRollouts, processor, *, group_size: int, scale_by_std: bool = True,
                 mask_truncated: bool = True) -> StepRollout:
    """Group-relative advantages of the scored episodes, and the training sequences of those that have turns.

    An episode that ended before its first turn (its context was full) has no token to train
    on: it counts in its group's advantages and metrics, and is left out of the sequences.

    A truncated episode (`Episode.truncated`: the turn limit, the context limit, or a last reply
    cut at the token limit) did not end on its own, so its reward says little about its tokens:
    with `mask_truncated` its tokens carry no loss and count in no normaliser (its trained mask
    is zeroed; the row stays, so every rank's forwards are unchanged), while its reward still
    counts in its group's advantages, as TRL's `mask_truncated_completions` and DAPO's
    overlong filtering do.

    Args:
        played: the step's scored episodes, prompt by prompt, `group_size` each.
        processor: the model's processor (`encode_episode`).
        group_size: G.
        scale_by_std: divide advantages by the group's std (False: Dr. GRPO).
        mask_truncated: leave truncated episodes out of the loss.
    """
    scored = played.scored
    rewards = torch.tensor([s.reward.total for s in scored])
    advantages = group_advantages(rewards, group_size, scale_by_std=scale_by_std)
    keep = [i for i, s in enumerate(scored) if s.episode.steps]
    encoded = [encode_episode(scored[i].episode, processor) for i in keep]
    if mask_truncated:
        encoded = [without_loss(e) if scored[i].episode.truncated else e for i, e in zip(keep, encoded, strict=True)]
    metrics = episode_metrics(scored) | {
        "truncated_rate": sum(s.episode.truncated for s in scored) / len(scored),
        "zero_advantage_groups": float((advantages.view(-1, group_size) == 0).all(dim=1).float().mean()),
        "rollout_s": played.rollout_s, "tool_s": sum(s.episode.tool_seconds for s in scored),
        "reward_s": played.reward_s,
    }
    return StepRollout(scored=scored, encoded=encoded, advantages=advantages[keep], metrics=metrics)


def loss_normalizer(encoded: list[EncodedEpisode], *, aggregation: str, constant: float | None = None
                    ) -> float | None:
    """`grpo_loss`'s normaliser for a step, the same on every rank.

    "token-mean": the step's sampled tokens over all ranks; "sequence-mean": its episodes over all
    ranks; both divided by the world size, since data parallelism averages the ranks' gradients,
    so the step's loss is the mean over every sampled token (or episode) whatever rank holds it.
    "constant": Dr. GRPO's `constant` over the world size, for the same reason: W ranks each
    dividing their share by C / W and averaged make the whole step's sum over C.
    An episode without trained tokens (a masked truncated one) counts in neither.
    """
    if aggregation not in ("token-mean", "sequence-mean", "constant"):
        raise ValueError(f"unknown aggregation {aggregation!r}")
    if aggregation == "constant" and constant is None:
        raise ValueError("aggregation 'constant' needs the constant (Dr. GRPO's normaliser)")
    tokens = [int(e.conversation.trained.sum()) for e in encoded]
    counts, _ = all_gather_rows([(sum(tokens), sum(1 for n in tokens if n))])
    world = len(counts)
    if aggregation == "constant":
        return constant / world
    column = {"token-mean": 0, "sequence-mean": 1}[aggregation]
    return sum(c[column] for c in counts) / world


def without_loss(encoded: EncodedEpisode) -> EncodedEpisode:
    """The same sequence with no trained token (its forward still runs; nothing trains)."""
    conversation = replace(encoded.conversation, trained=torch.zeros_like(encoded.conversation.trained))
    return replace(encoded, conversation=conversation)


@dataclass(frozen=True)
class StepRecord:
    """What a GRPO training step hands its callbacks (`training_step` returns `{"record": ...}`).

    Attributes:
        step: the global step the episodes were sampled at (the `s{step}` of their ids); with
            `passes` > 1 the batch's optimizer steps are step .. step + passes - 1.
        scored: every episode of the step on this rank, prompt by prompt, `group_size` each.
        group_size: G.
        rollout: the sampling settings.
        model: the policy's path (what trained).
    """

    step: int
    scored: tuple[ScoredEpisode, ...]
    group_size: int
    rollout: RolloutSpec
    model: str

    def __post_init__(self) -> None:
        if self.group_size < 1 or len(self.scored) % self.group_size:
            raise ValueError(f"{len(self.scored)} episodes do not make groups of {self.group_size}")

    @staticmethod
    def from_outputs(outputs: Any) -> StepRecord:
        """The record in a training step's `outputs`, as Lightning hands them to `on_train_batch_end`.

        Raises:
            TypeError: the outputs hold no record (a stage other than GRPO).
        """
        record = outputs.get("record") if isinstance(outputs, Mapping) else None
        if not isinstance(record, StepRecord):
            raise TypeError(f"expected a GRPO step's outputs {{'record': StepRecord}}, got {type(outputs).__name__}: "
                            "this callback reads GRPO steps only")
        return record
