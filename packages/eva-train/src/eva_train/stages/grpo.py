"""The GRPO stage: the policy plays whole episodes with the frame tool and learns from group-relative rewards.

EVA's third stage (paper, "RL"; GRPO of Shao et al. 2024) samples every prompt G times as full
agent episodes (several `frame_select` calls, frames decoded for real, a final answer), scores
them, and raises the probability of the better episodes of each group. One training step:

    prompts -> rollouts (`eva_train.rl.rollouts.collect_rollouts`, G per prompt, frame tool in the loop)
            -> rewards (`eva_data.rewards`, the functions evaluation scores with)
            -> advantages (`eva_train.rl.advantages.group_advantages`)
            -> `passes` optimizer steps over the episodes in micro-batches (`encode_episode`: the
               exact sampled ids; `policy_logprobs`; `eva_train.objectives.losses.grpo_loss`)
            -> `engine.sync_weights()` -> one `log_dict`.

Manual optimisation: one Lightning batch (a list of prompts) makes `passes` optimizer steps;
the schedule counts optimizer steps. `old` log-probs are the engine's sampling log-probs
(`TurnTokens.completion_logprobs`), equal to the training forward's at the same temperature
(`policy_logprobs(temperature=)`; tested), so the first pass has ratio 1. The "token-mean" normaliser is the step's count of
sampled tokens. The completeness reward ("csv") judges with the reference model.

Held-out prompts (the data module's validation set) are played once each at `val_temperature`
(greedy by default, as evaluation runs) and logged as `val/reward_mean`, `val/accuracy`, ...:
the learning curve. Under FSDP2 every rank plays its own prompts with the weights gathered,
the micro-batch counts are made equal across ranks, and metrics are the ranks' means.

Around the module: prompts from folders or eva-data shards with a resumable position
(`eva_train.data.prompts`, `eva_train.data.shards`), episode dumps in eva-eval's run format
(`eva_train.callbacks.episode_dump`), and data-enhanced multi-stage training (`eva_train.data.curriculum`,
`eva_train.callbacks.failures`).
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

from eva_train.data.sources import RlItem
from eva_train.encoding.collate import collate
from eva_train.encoding.episodes import EncodedEpisode, blank_image_row, encode_episode
from eva_train.model.distributed import all_gather_rows
from eva_train.model.loading import LoraSpec, ModelSpec
from eva_train.model.optim import OptimSpec, build_optimizer
from eva_train.model.sharding import ShardingSpec, is_sharded
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import grpo_loss
from eva_train.objectives.reference import AdapterReference, ModelReference, ReferenceSpec
from eva_train.rl.advantages import group_advantages
from eva_train.rl.rollouts import collect_rollouts, prompt_key
from eva_train.stages.base import PolicyModule

VAL_STEP = -1  # the step of held-out sample keys: training steps count from 0


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
        temperature = self.temperature if temperature is None else temperature
        return AgentConfig(max_turns=self.max_turns, budget=self.budget, tool_threads=1,
                           generation=GenerationConfig(max_new_tokens=self.max_new_tokens,
                                                       temperature=temperature, seed=self.seed,
                                                       max_context_tokens=self.max_context_tokens))


@dataclass
class GRPOLossSpec:
    """The objective's knobs (`eva_train.objectives.losses.grpo_loss`, `eva_train.rl.advantages`).

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
        if self.rollout_spec.temperature <= 0:
            raise ValueError("GRPO samples its episodes: rollout temperature must be > 0")
        if self.rollout_spec.group_size < 2:
            raise ValueError("GRPO compares samples within a group: group_size must be >= 2")
        if self.loss_spec.passes < 1 or self.loss_spec.micro_batch_size < 1:
            raise ValueError("passes and micro_batch_size must be >= 1")
        self.automatic_optimization = False
        self.processor = None
        self.engine: TransformersPolicy | None = None
        self.last_rollout: StepRollout | None = None  # the latest training step's, for callbacks
        self._blank_row = None  # built on the first sharded step (`blank_image_row`)

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

    def _play(self, items: list[RlItem], *, group_size: int, step: int, config: AgentConfig
              ) -> tuple[list[ScoredEpisode], float, float]:
        """Episodes of every prompt (G each) and their rewards; (scored, rollout s, reward s).

        Under FSDP2 the rollouts run with the weights gathered once (`gathered_for_rollouts`),
        so ranks whose episodes differ in turns and lengths make no collective call."""
        t0 = time.perf_counter()
        tasks = [Task(video=item.video, prompt=item.prompt.prompt, video_id=item.prompt.video_key) for item in items]
        groups = collect_rollouts(self.engine, tasks, group_size=group_size, step=step, config=config,
                                  model=self.policy if is_sharded(self.policy) else None,
                                  prompt_keys=[prompt_key(item.prompt.id) for item in items])
        t1 = time.perf_counter()
        judge = self._judge()
        scored = [ScoredEpisode(item, ep, episode_reward(RewardInput(ep, item.prompt, video=item.video, judge=judge),
                                                         self.reward_config))
                  for item, group in zip(items, groups, strict=True) for ep in group.episodes]
        return scored, t1 - t0, time.perf_counter() - t1

    def rollout(self, items: list[RlItem]) -> StepRollout:
        """Sample G episodes per prompt, score them, encode the ones that have tokens."""
        g = self.rollout_spec.group_size
        scored, rollout_s, reward_s = self._play(items, group_size=g, step=self.global_step,
                                                 config=self.rollout_spec.agent_config())
        rewards = torch.tensor([s.reward.total for s in scored])
        advantages = group_advantages(rewards, g, scale_by_std=self.loss_spec.scale_by_std)
        keep = [i for i, s in enumerate(scored) if s.episode.steps]
        encoded = [encode_episode(scored[i].episode, self.processor) for i in keep]
        metrics = episode_metrics(scored) | {
            "zero_advantage_groups": float((advantages.view(-1, g) == 0).all(dim=1).float().mean()),
            "rollout_s": rollout_s, "tool_s": sum(s.episode.tool_seconds for s in scored), "reward_s": reward_s,
        }
        return StepRollout(scored=scored, encoded=encoded, advantages=advantages[keep], metrics=metrics)

    def _reference_logps(self, batch) -> Tensor | None:
        if self.loss_spec.kl_coef == 0:
            return None
        with torch.no_grad():
            if isinstance(self.reference, AdapterReference):
                with self.policy.disable_adapter():
                    return policy_logprobs(self.policy, batch, suppress=self.engine.suppress,
                                           temperature=self.rollout_spec.temperature)
            if isinstance(self.reference, ModelReference):
                self.reference.model.eval()
                return policy_logprobs(self.reference.model, batch, suppress=self.engine.suppress,
                                       temperature=self.rollout_spec.temperature)
        raise ValueError(f"GRPO cannot use a {type(self.reference).__name__} reference")

    def optimise(self, rollout: StepRollout) -> dict[str, float]:
        """`passes` optimizer steps over the episodes, micro-batch by micro-batch.

        The token-mean normaliser N is the step's sampled tokens over ALL ranks (divided by the
        world size, since data parallelism averages the ranks' gradients), so the step's loss is
        the mean over every sampled token whatever rank holds it. Every rank runs the same number
        of micro-batches (FSDP2 gathers and reduces in each forward and backward): a rank with
        fewer episodes repeats its last micro-batch with weight 0, and a micro-batch without
        frames gets a blank-image row that trains nothing (`blank_image_row`), so that the vision
        tower runs on every rank.
        """
        spec = self.loss_spec
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        n_tokens = sum(int(e.conversation.trained.sum()) for e in rollout.encoded)
        n_micro = math.ceil(len(rollout.encoded) / spec.micro_batch_size)
        counts, _ = all_gather_rows([(n_tokens, len(rollout.encoded), n_micro)])
        world = len(counts)
        total_micro = max(c[2] for c in counts)
        if n_micro == 0:
            raise RuntimeError(f"rank {self.global_rank} has no episode with a turn to train on while another rank "
                               "has; every episode overflowed the context at its first turn?")
        normalizer = {"token-mean": sum(c[0] for c in counts) / world,
                      "sequence-mean": sum(c[1] for c in counts) / world,
                      "constant": spec.constant}[spec.aggregation]
        pad_id = self.processor.tokenizer.pad_token_id
        sharded = is_sharded(self.policy)
        if sharded and self._blank_row is None:
            self._blank_row = blank_image_row(self.processor)
        sums: dict[str, float] = {}
        for _ in range(spec.passes):
            for m in range(total_micro):
                start = min(m, n_micro - 1) * spec.micro_batch_size
                weight = 1.0 if m < n_micro else 0.0  # lockstep filler: same forward, no gradient
                rows = rollout.encoded[start:start + spec.micro_batch_size]
                conversations = [e.conversation for e in rows]
                if sharded and all(c.pixel_values is None and c.images is None for c in conversations):
                    conversations.append(self._blank_row)
                batch = collate(conversations, pad_id=pad_id).to(self.device)
                n = len(rows)
                old = torch.zeros((n, batch.trained.shape[1]), dtype=torch.float32, device=self.device)
                for b, e in enumerate(rows):
                    old[b, :e.sampled_logprobs.numel()] = e.sampled_logprobs
                logps = policy_logprobs(self.policy, batch, suppress=self.engine.suppress,
                                        temperature=self.rollout_spec.temperature)[:n]
                ref = self._reference_logps(batch)
                loss, metrics = grpo_loss(
                    logps, old, rollout.advantages[start:start + n].to(self.device), batch.trained[:n],
                    ref_logps=None if ref is None else ref[:n], epsilon=spec.epsilon, epsilon_high=spec.epsilon_high,
                    kl_coef=spec.kl_coef, aggregation=spec.aggregation, normalizer=normalizer)
                self.manual_backward(loss * weight)
                if weight:
                    for k, v in {"loss": loss.detach(), **metrics}.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        out = {k: v / (n_micro * spec.passes) for k, v in sums.items() if k not in ("loss", "trained_tokens")}
        out["loss"] = sums.get("loss", 0.0) / spec.passes  # the summed micro-batches make one step's loss
        out["trained_tokens"] = float(n_tokens)
        out["micro_batches"] = float(total_micro)
        return out

    def _log_mean(self, metrics: dict[str, float], *, prefix: str, batch_size: int) -> dict[str, float]:
        """Log the ranks' mean of every metric (values gathered, so every rank logs the same and
        nothing is synchronised by Lightning); a metric NaN on every rank is left out."""
        gathered, _ = all_gather_rows([metrics])
        keys = sorted({k for m in gathered for k in m})
        means = {}
        for k in keys:
            values = [float(m[k]) for m in gathered if k in m and not math.isnan(float(m[k]))]
            if values:
                means[k] = sum(values) / len(values)
        self.log_dict({f"{prefix}/{k}": v for k, v in means.items()}, batch_size=batch_size)
        return means

    def training_step(self, batch: list[RlItem], batch_idx: int) -> None:
        rollout = self.rollout(batch)
        self.last_rollout = rollout
        t0 = time.perf_counter()
        metrics = dict(rollout.metrics)
        if sum(all_gather_rows([len(rollout.encoded)])[0]):  # the same decision on every rank
            metrics |= self.optimise(rollout)
            self.engine.sync_weights()
        metrics["train_s"] = time.perf_counter() - t0
        metrics |= self.step_metrics(num_tokens=int(metrics.get("trained_tokens", 0)), padding_fraction=0.0)
        means = self._log_mean(metrics, prefix="train", batch_size=len(batch))
        self.log("reward", means["reward_mean"], prog_bar=True, logger=False, batch_size=len(batch))

    # ---- held-out episodes ------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_scored: list[ScoredEpisode] = []

    def validation_step(self, batch: list[RlItem], batch_idx: int) -> None:
        """One episode per held-out prompt at `val_temperature` (greedy: what evaluation runs).
        Sampled ones use the same random streams at every validation (step `VAL_STEP`), so
        successive points of the curve differ by the policy, not by the draw."""
        scored, _, _ = self._play(batch, group_size=1, step=VAL_STEP,
                                  config=self.rollout_spec.agent_config(temperature=self.rollout_spec.val_temperature))
        self._val_scored.extend(scored)

    def on_validation_epoch_end(self) -> None:
        if self._val_scored:
            gathered, _ = all_gather_rows(self._val_scored)
            self._log_mean(episode_metrics(gathered) | {"episodes": float(len(gathered))}, prefix="val",
                           batch_size=len(gathered))
        self._val_scored = []


def episode_metrics(scored: list[ScoredEpisode]) -> dict[str, float]:
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
