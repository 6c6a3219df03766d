"""The GRPO stage: the policy plays whole episodes with the frame tool and learns from group-relative rewards.

EVA's third stage (paper, "RL"; GRPO of Shao et al. 2024) samples every prompt G times as full
agent episodes (several `frame_select` calls, frames decoded for real, a final answer), scores
them, and raises the probability of the better episodes of each group. One training step:

    prompts -> rollouts (`eva_train.rollouts.collect_rollouts`, G per prompt, frame tool in the loop)
            -> rewards (`eva_data.rewards`, the functions evaluation scores with)
            -> advantages (`eva_train.advantages.group_advantages`)
            -> `passes` optimizer steps over the episodes in micro-batches (`encode_episode`: the
               exact sampled ids; `policy_logprobs`; `eva_train.losses.grpo_loss`)
            -> `engine.sync_weights()` -> one `log_dict`.

Manual optimisation: one Lightning batch (a list of prompts) makes `passes` optimizer steps;
the schedule counts optimizer steps. `old` log-probs are the engine's sampling log-probs
(`TurnTokens.completion_logprobs`), equal to the training forward's at temperature 1 (tested
in issue 10), so the first pass has ratio 1. The "token-mean" normaliser is the step's count of
sampled tokens. The completeness reward ("csv") judges with the reference model.

Not yet (issue 13): FSDP2 lockstep (every rank the same number of micro-batches), resume of
the data position, multi-stage data refresh, episode dumps in eva-eval's record format.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from eva_core.agent import AgentConfig, Task
from eva_core.backends.transformers_backend import TransformersPolicy
from eva_core.episode import Episode
from eva_core.policy import GenerationConfig
from eva_data.rewards import Reward, RewardConfig, RewardInput, episode_reward, policy_judge
from torch import Tensor
from transformers import AutoProcessor

from eva_train.advantages import group_advantages
from eva_train.base import PolicyModule
from eva_train.collate import collate
from eva_train.episode_encoding import EncodedEpisode, encode_episode
from eva_train.logprobs import policy_logprobs
from eva_train.losses import grpo_loss
from eva_train.modeling import LoraSpec, ModelSpec
from eva_train.optim import OptimSpec, build_optimizer
from eva_train.reference import AdapterReference, ModelReference, ReferenceSpec
from eva_train.rl_data import RlItem
from eva_train.rollouts import collect_rollouts
from eva_train.sharding import ShardingSpec


@dataclass
class RolloutSpec:
    """How episodes are sampled.

    Attributes:
        group_size: G, samples per prompt (paper: 8).
        max_turns: assistant turns per episode (protocol: 6).
        max_new_tokens: tokens per reply.
        temperature: sampling temperature (1: the sampling log-probs are the policy's).
        budget: visual tokens per tool call (protocol: 12000).
        max_context_tokens: longest context an episode may reach; None for no limit.
        seed: seeds every sample by (seed, step, prompt, sample).
    """

    group_size: int = 8
    max_turns: int = 6
    max_new_tokens: int = 2048
    temperature: float = 1.0
    budget: int = 12000
    max_context_tokens: int | None = None
    seed: int = 0

    def agent_config(self) -> AgentConfig:
        return AgentConfig(max_turns=self.max_turns, budget=self.budget, tool_threads=1,
                           generation=GenerationConfig(max_new_tokens=self.max_new_tokens,
                                                       temperature=self.temperature, seed=self.seed,
                                                       max_context_tokens=self.max_context_tokens))


@dataclass
class GRPOLossSpec:
    """The objective's knobs (`eva_train.losses.grpo_loss`, `eva_train.advantages`).

    Attributes:
        epsilon, epsilon_high: clip range (paper: 0.2; epsilon_high None = symmetric).
        kl_coef: k3 KL coefficient (0 skips the reference forward).
        aggregation: "token-mean", "sequence-mean" or "constant".
        constant: Dr. GRPO's normaliser (aggregation "constant").
        scale_by_std: divide advantages by the group's std (False: Dr. GRPO).
        passes: optimizer steps over each rollout batch.
        micro_batch_size: episodes per forward.
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    kl_coef: float = 0.0
    aggregation: str = "token-mean"
    constant: float | None = None
    scale_by_std: bool = True
    passes: int = 1
    micro_batch_size: int = 4


@dataclass(frozen=True)
class ScoredEpisode:
    """One sampled episode of a step with its prompt and reward (what callbacks read: episode
    dumps, the failure file of multi-stage training)."""

    item: RlItem
    episode: Episode
    reward: Reward


@dataclass
class StepRollout:
    """One step's sampled episodes with what training reads.

    Attributes:
        scored: every episode of the step, prompt by prompt, G each (sample order).
        encoded: the training sequences of the episodes that have turns.
        advantages: one per encoded episode.
        metrics: the rollout's metrics (rewards, rates, timings).
    """

    scored: list[ScoredEpisode]
    encoded: list[EncodedEpisode]
    advantages: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class GRPOModule(PolicyModule):
    """Multi-turn GRPO (see the module docstring).

    Args:
        model, lora, optim, sharding: as `PolicyModule`.
        reference: pi_ref for the KL penalty and the "csv" judge (default: adapters for LoRA,
            a frozen copy otherwise); not built when kl_coef is 0 and the reward needs no judge.
        rollout: sampling settings.
        loss: objective settings.
        reward: reward settings (`eva_data.rewards.RewardConfig`).
    """

    def __init__(self, model: ModelSpec, lora: LoraSpec | None = None, optim: OptimSpec | None = None,
                 sharding: ShardingSpec | None = None, reference: ReferenceSpec | None = None,
                 rollout: RolloutSpec | None = None, loss: GRPOLossSpec | None = None,
                 reward: RewardConfig | None = None) -> None:
        self.rollout_spec = rollout or RolloutSpec()
        self.loss_spec = loss or GRPOLossSpec()
        self.reward_config = reward or RewardConfig()
        needs_reference = self.loss_spec.kl_coef > 0 or self.reward_config.name == "csv"
        if needs_reference and reference is not None and reference.kind == "precomputed":
            raise ValueError("GRPO scores fresh episodes: the reference cannot be precomputed")
        super().__init__(model=model, lora=lora, optim=optim, sharding=sharding,
                         reference=(reference or ReferenceSpec()) if needs_reference else None)
        if self.rollout_spec.group_size < 2:
            raise ValueError("GRPO compares samples within a group: group_size must be >= 2")
        if self.loss_spec.passes < 1 or self.loss_spec.micro_batch_size < 1:
            raise ValueError("passes and micro_batch_size must be >= 1")
        self.automatic_optimization = False
        self.processor = None
        self.engine: TransformersPolicy | None = None
        self.last_rollout: StepRollout | None = None  # the latest training step's, for callbacks

    def configure_model(self) -> None:
        super().configure_model()
        if self.engine is None:
            self.processor = AutoProcessor.from_pretrained(self.model_spec.path)
            self.engine = TransformersPolicy(self.policy, self.processor)

    def configure_optimizers(self) -> dict[str, Any]:
        steps = int(self.trainer.estimated_stepping_batches) * self.loss_spec.passes
        optimizer, scheduler = build_optimizer(self.policy, self.optim_spec, total_steps=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- the phases of a step -------------------------------------------------------------------
    def _judge(self):
        if self.reward_config.name != "csv":
            return None
        model = self.reference_model if self.reference_model is not None else self.policy
        judge_engine = TransformersPolicy(model, self.processor)
        if isinstance(self.reference, AdapterReference):  # the base model under disabled adapters

            def judge(question, frames, labels):
                with self.policy.disable_adapter():
                    return policy_judge(judge_engine)(question, frames, labels)

            return judge
        return policy_judge(judge_engine)

    def rollout(self, items: list[RlItem]) -> StepRollout:
        """Sample G episodes per prompt, score them, encode the ones that have tokens."""
        spec, g = self.rollout_spec, self.rollout_spec.group_size
        t0 = time.perf_counter()
        tasks = [Task(video=item.video, prompt=item.prompt.prompt, video_id=item.prompt.video_key) for item in items]
        groups = collect_rollouts(self.engine, tasks, group_size=g, step=self.global_step,
                                  config=spec.agent_config())
        t1 = time.perf_counter()
        judge = self._judge()
        scored = [(item, ep, episode_reward(RewardInput(ep, item.prompt, video=item.video, judge=judge),
                                            self.reward_config))
                  for item, group in zip(items, groups, strict=True) for ep in group.episodes]
        t2 = time.perf_counter()
        rewards = torch.tensor([r.total for _, _, r in scored])
        advantages = group_advantages(rewards, g, scale_by_std=self.loss_spec.scale_by_std)
        keep = [i for i, (_, ep, _) in enumerate(scored) if ep.steps]
        encoded = [encode_episode(scored[i][1], self.processor) for i in keep]
        episodes = [ep for _, ep, _ in scored]
        metrics = {
            "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(),
            "accuracy": sum(r.correctness == 1.0 for _, _, r in scored) / len(scored),
            "format_rate": sum(r.tool_called and r.correctness == 0.0 for _, _, r in scored) / len(scored),
            "tool_call_rate": sum(r.tool_called for _, _, r in scored) / len(scored),
            "guard_rate": sum(r.guarded for _, _, r in scored) / len(scored),
            "rounds": sum(ep.rounds for ep in episodes) / len(episodes),
            "visual_tokens": sum(c.visual_tokens for ep in episodes for s in ep.steps for c in s.calls) / len(episodes),
            "zero_advantage_groups": float((advantages.view(-1, g) == 0).all(dim=1).float().mean()),
            "rollout_s": t1 - t0, "tool_s": sum(ep.tool_seconds for ep in episodes), "reward_s": t2 - t1,
        }
        return StepRollout(scored=[ScoredEpisode(item, ep, r) for item, ep, r in scored], encoded=encoded,
                           advantages=advantages[keep], metrics=metrics)

    def _reference_logps(self, batch) -> Tensor | None:
        if self.loss_spec.kl_coef == 0:
            return None
        with torch.no_grad():
            if isinstance(self.reference, AdapterReference):
                with self.policy.disable_adapter():
                    return policy_logprobs(self.policy, batch, suppress=self.engine.suppress)
            if isinstance(self.reference, ModelReference):
                self.reference.model.eval()
                return policy_logprobs(self.reference.model, batch, suppress=self.engine.suppress)
        raise ValueError(f"GRPO cannot use a {type(self.reference).__name__} reference")

    def optimise(self, rollout: StepRollout) -> dict[str, float]:
        """`passes` optimizer steps over the episodes, micro-batch by micro-batch."""
        spec = self.loss_spec
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        n_tokens = sum(int(e.conversation.trained.sum()) for e in rollout.encoded)
        normalizer = {"token-mean": n_tokens, "sequence-mean": len(rollout.encoded),
                      "constant": spec.constant}[spec.aggregation]
        pad_id = self.processor.tokenizer.pad_token_id
        sums: dict[str, float] = {}
        micro = 0
        for _ in range(spec.passes):
            for start in range(0, len(rollout.encoded), spec.micro_batch_size):
                rows = rollout.encoded[start:start + spec.micro_batch_size]
                batch = collate([e.conversation for e in rows], pad_id=pad_id).to(self.device)
                old = torch.zeros(batch.trained.shape, dtype=torch.float32, device=self.device)
                for b, e in enumerate(rows):
                    old[b, :e.sampled_logprobs.numel()] = e.sampled_logprobs
                logps = policy_logprobs(self.policy, batch, suppress=self.engine.suppress)
                loss, metrics = grpo_loss(
                    logps, old, rollout.advantages[start:start + len(rows)].to(self.device), batch.trained,
                    ref_logps=self._reference_logps(batch), epsilon=spec.epsilon, epsilon_high=spec.epsilon_high,
                    kl_coef=spec.kl_coef, aggregation=spec.aggregation, normalizer=normalizer)
                self.manual_backward(loss)
                for k, v in {"loss": loss.detach(), **metrics}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                micro += 1
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        out = {k: v / micro for k, v in sums.items() if k not in ("loss", "trained_tokens")}
        out["loss"] = sums.get("loss", 0.0) / spec.passes  # the summed micro-batches make one step's loss
        out["trained_tokens"] = float(n_tokens)
        return out

    def training_step(self, batch: list[RlItem], batch_idx: int) -> None:
        rollout = self.rollout(batch)
        self.last_rollout = rollout
        t0 = time.perf_counter()
        metrics = dict(rollout.metrics)
        if rollout.encoded:
            metrics |= self.optimise(rollout)
            self.engine.sync_weights()
        metrics["train_s"] = time.perf_counter() - t0
        metrics |= self.step_metrics(num_tokens=int(metrics.get("trained_tokens", 0)), padding_fraction=0.0)
        logged = {f"train/{k}": float(v) for k, v in metrics.items() if not math.isnan(float(v))}
        self.log_dict(logged, batch_size=len(batch))
        self.log("reward", metrics["reward_mean"], prog_bar=True, logger=False, batch_size=len(batch))
