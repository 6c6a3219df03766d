"""Playing prompts and scoring the episodes: the rollout and reward phases of a GRPO step.

Holds `ScoredEpisode` (an episode with its prompt and reward), `ScoredRollouts` (a list of
prompts played, with timings), `play_and_score` and `episode_metrics`.

`play_and_score` samples G episodes per prompt (`eva_train.rl.rollouts.collect_rollouts`) and
scores each with the reward function evaluation scores with (`eva_data.rewards.episode_reward`),
so a training reward and an evaluation score of the same episode are the same number. Training
steps play G > 1 samples at the rollout temperature; held-out prompts are played once each at
the validation temperature.

Under FSDP2 both phases generate rank-locally with the weights gathered
(`eva_train.model.sharding.gathered_for_rollouts`): the rollouts on the policy, and the "csv"
reward's judge on its own model, which a rank calls once per right answer with a tool turn, a
number its own episodes decide. A judge that is the policy itself (LoRA, adapters disabled)
scores inside the rollouts' gather; a separate frozen copy is gathered after the policy is
resharded, so a rank holds one full model at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from eva_core.agent import AgentConfig, Task
from eva_core.episode import Episode
from eva_core.policy import RolloutEngine
from eva_data.rewards import Judge, Reward, RewardConfig, RewardInput, episode_reward
from torch import nn

from eva_train.data.sources import RlItem
from eva_train.model.sharding import gathered_for_rollouts
from eva_train.rl.rollouts import RolloutGroup, collect_rollouts, prompt_key


@dataclass(frozen=True)
class ScoredEpisode:
    """One sampled episode with its prompt and reward.

    Attributes:
        item: the prompt and its video.
        episode: the episode sampled for it (token ids, sampling log-probs, frames).
        reward: its reward, with the parts callbacks read (correctness, tool use, guard).
    """

    item: RlItem
    episode: Episode
    reward: Reward


@dataclass(frozen=True)
class ScoredRollouts:
    """Every episode sampled for a list of prompts, scored.

    Attributes:
        scored: prompt by prompt, `group_size` each, in sample order.
        rollout_s: seconds spent sampling (the frame tool included).
        reward_s: seconds spent scoring (a judge's generation included).
    """

    scored: list[ScoredEpisode]
    rollout_s: float
    reward_s: float


def play_and_score(engine: RolloutEngine, items: Sequence[RlItem], *, group_size: int, step: int,
                   config: AgentConfig, reward: RewardConfig, judge: Judge | None = None,
                   model: nn.Module | None = None, judge_model: nn.Module | None = None) -> ScoredRollouts:
    """Sample `group_size` episodes of every prompt and score each.

    Collective when `model` or `judge_model` is given: every rank calls it once, with its own items.

    Args:
        engine: the rollout engine over the policy.
        items: the prompts with their videos.
        group_size: samples per prompt (G in training, 1 for held-out prompts).
        step: the training step, part of every sample key (`collect_rollouts`).
        config: the agent loop's settings (`RolloutSpec.agent_config`).
        reward: which reward function scores the episodes.
        judge: the completeness judge of the "csv" reward; None for other rewards.
        model: the engine's module when it is FSDP2-sharded: the rollouts then run with the weights
            gathered once (`gathered_for_rollouts`), so ranks whose episodes differ in turns and
            lengths make no collective call.
        judge_model: the module `judge` generates with when it is FSDP2-sharded: the scoring then
            runs with its weights gathered too (see the module docstring); `model` itself when the
            policy judges.
    """
    t0 = time.perf_counter()
    tasks = [Task(video=item.video, prompt=item.prompt.prompt, video_id=item.prompt.video_key) for item in items]
    keys = [prompt_key(item.prompt.id) for item in items]
    shared = judge_model is model  # the policy judges, or nothing is sharded: one gather for both phases
    with _gathered(model):
        groups = collect_rollouts(engine, tasks, group_size=group_size, step=step, config=config, prompt_keys=keys)
        t1 = time.perf_counter()
        if shared:
            scored = _score(items, groups, reward=reward, judge=judge)
    if not shared:
        with _gathered(judge_model):
            scored = _score(items, groups, reward=reward, judge=judge)
    return ScoredRollouts(scored=scored, rollout_s=t1 - t0, reward_s=time.perf_counter() - t1)


def _gathered(model: nn.Module | None) -> AbstractContextManager:
    return nullcontext() if model is None else gathered_for_rollouts(model)


def _score(items: Sequence[RlItem], groups: Sequence[RolloutGroup], *, reward: RewardConfig,
           judge: Judge | None) -> list[ScoredEpisode]:
    return [ScoredEpisode(item, ep, episode_reward(RewardInput(ep, item.prompt, video=item.video, judge=judge), reward))
            for item, group in zip(items, groups, strict=True) for ep in group.episodes]


def episode_metrics(scored: Sequence[ScoredEpisode]) -> dict[str, float]:
    """Reward mean and std, accuracy, format rate (the 0.05 floor paid), tool-call rate, guard
    rate, mean rounds and mean visual tokens of a list of scored episodes."""
    n = len(scored)
    rewards = torch.tensor([s.reward.total for s in scored], dtype=torch.float64)
    return {
        "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item() if n > 1 else 0.0,
        "accuracy": sum(s.reward.correctness == 1.0 for s in scored) / n,
        "format_rate": sum(s.reward.tool_called and s.reward.correctness == 0.0 for s in scored) / n,
        "tool_call_rate": sum(s.reward.tool_called for s in scored) / n,
        "guard_rate": sum(s.reward.guarded for s in scored) / n,
        "rounds": sum(s.episode.rounds for s in scored) / n,
        "visual_tokens": sum(c.visual_tokens for s in scored for st in s.episode.steps for c in st.calls) / n,
    }
