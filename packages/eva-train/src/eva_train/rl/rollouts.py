"""Rollouts for online RL: G episodes sampled per prompt from the policy being trained.

Holds `RolloutSpec` (how episodes are sampled), `RolloutGroup` (one prompt's G episodes),
`prompt_key` and `collect_rollouts`.

`collect_rollouts` is what a GRPO step calls first: each prompt (an agent `Task`) becomes G
tasks with sample keys (step, prompt, sample), all run as one batch by the agent loop
(`eva_core.agent.run_episodes`) on a rollout engine (`eva_core.policy.RolloutEngine`), so the
G first turns of a prompt share one prefill and every sample is reproducible from (seed,
step, prompt, sample). Under FSDP2 the batch runs inside `gathered_for_rollouts`, so ranks
whose episodes differ in length and turns make no collective call. Each returned episode
carries its token ids, sampling log-probs and frames: `eva_train.encoding.episodes.encode_episode`
turns it into a training sequence.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from eva_core.agent import AgentConfig, Task, run_episodes
from eva_core.episode import Episode
from eva_core.policy import GenerationConfig, RolloutEngine
from torch import nn

from eva_train.model.sharding import gathered_for_rollouts


@dataclass
class RolloutSpec:
    """How episodes are sampled.

    Attributes:
        group_size: G, samples per prompt (paper: 8).
        max_turns: assistant turns per episode (protocol: 6).
        max_new_tokens: tokens per reply.
        temperature: sampling temperature (> 0); training log-probs are taken at the same
            temperature, so the first pass's ratio is 1 at any temperature.
        budget: visual tokens per tool call (protocol: 12000).
        max_context_tokens: longest context an episode may reach; None for no limit.
        seed: seeds every sample by (seed, step, prompt, sample).
        val_temperature: sampling temperature of the held-out episodes (0: greedy, what
            evaluation runs; one episode per prompt).
    """

    group_size: int = 8
    max_turns: int = 6
    max_new_tokens: int = 2048
    temperature: float = 1.0
    budget: int = 12000
    max_context_tokens: int | None = None
    seed: int = 0
    val_temperature: float = 0.0

    def agent_config(self, *, temperature: float | None = None) -> AgentConfig:
        """The agent loop's settings for these samples (`temperature` overrides the spec's)."""
        temperature = self.temperature if temperature is None else temperature
        return AgentConfig(max_turns=self.max_turns, budget=self.budget, tool_threads=1,
                           generation=GenerationConfig(max_new_tokens=self.max_new_tokens,
                                                       temperature=temperature, seed=self.seed,
                                                       max_context_tokens=self.max_context_tokens))


@dataclass
class RolloutGroup:
    """The G episodes sampled for one prompt.

    Attributes:
        prompt: index of the prompt in the step's list.
        episodes: G episodes; sample g ran under sample key (step, prompt, g).
    """

    prompt: int
    episodes: list[Episode]

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("a rollout group needs at least one episode")


def prompt_key(prompt_id: str) -> int:
    """A prompt's integer name in sample keys: CRC-32 of its id (ids are unique within a data set)."""
    return zlib.crc32(prompt_id.encode("utf-8"))


def collect_rollouts(engine: RolloutEngine, prompts: Sequence[Task], *, group_size: int, step: int,
                     config: AgentConfig, model: nn.Module | None = None,
                     prompt_keys: Sequence[int] | None = None) -> list[RolloutGroup]:
    """Sample `group_size` episodes of every prompt, all in one batch; sample g of a prompt with
    key k runs under sample key (step, k, g).

    Args:
        engine: the rollout engine (weights synced with `engine.sync_weights` after each update).
        prompts: one task per prompt (video and question); their ids and keys are replaced.
        group_size: G, samples per prompt.
        step: the training step, part of every sample key (another step, other samples).
        config: the agent loop's settings; sampling needs `generation.temperature > 0` and a seed
            for reproducible samples.
        model: the engine's module when it may be FSDP2-sharded (gathered for the rollouts).
        prompt_keys: one integer per prompt naming it in sample keys (default: its index in
            `prompts`); training passes `prompt_key(prompt id)`, so a prompt is sampled alike
            whichever rank or position of the step holds it.

    Returns:
        One group per prompt, in order.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    keys = list(range(len(prompts))) if prompt_keys is None else [int(k) for k in prompt_keys]
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} prompt keys for {len(prompts)} prompts")
    tasks = [replace(task, episode_id=f"s{step}p{key}g{g}", sample_key=(step, key, g))
             for key, task in zip(keys, prompts, strict=True) for g in range(group_size)]
    if model is None:
        episodes = run_episodes(engine, tasks, config)
    else:
        with gathered_for_rollouts(model):
            episodes = run_episodes(engine, tasks, config)
    return [RolloutGroup(p, episodes[p * group_size:(p + 1) * group_size]) for p in range(len(prompts))]
