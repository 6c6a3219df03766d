"""The GRPO stage: the policy plays whole episodes with the frame tool and learns from group-relative rewards.

Holds `GRPOLossSpec` (the objective's settings) and `GRPOModule`; `RolloutSpec` (the sampling
settings) lives with the rollouts and is importable from here too.

EVA's third stage (paper, "RL"; GRPO of Shao et al. 2024) samples every prompt G times as full
agent episodes (several `frame_select` calls, frames decoded for real, a final answer), scores
them, and raises the probability of the better episodes of each group. One training step:

    prompts -> rollout and score (`eva_train.rl.scoring.play_and_score`: G episodes per prompt, frame
               tool in the loop; rewards from `eva_data.rewards`, the functions evaluation scores with)
            -> advantages and sequences (`eva_train.rl.step.step_rollout`: `group_advantages`,
               `encode_episode` with the exact sampled ids)
            -> optimise: `passes` optimizer steps over lockstep micro-batches
               (`eva_train.encoding.microbatches`; `policy_logprobs`; `eva_train.objectives.losses.grpo_loss`)
            -> `engine.sync_weights()` -> one `log_dict` -> the step's record to the callbacks.

Manual optimisation: one Lightning batch (a list of prompts) makes `passes` optimizer steps;
the schedule counts optimizer steps. pi_old, the ratio's denominator, is the training forward's
own log-probs, never the sampler's (as TRL and verl): with one pass, the forward's log-probs
detached (ratio exactly 1); with several, a no-grad forward over the step's micro-batches before
the first pass. The engine's sampling log-probs (`TurnTokens.completion_logprobs`) differ from
the trainer's on a GPU (kernels, batch shapes, KV cache, bf16): they are measured against it
(`train/logp_gap_mean`, `_max`, `_share`: tokens whose ratio to the sampler is off by more than
0.1) and feed an optional capped importance-sampling correction (`loss.importance_sampling_cap`).
Before each optimizer step the gradients' norm is clipped (`loss.max_grad_norm`, logged as
`train/grad_norm`); a non-finite norm skips the step. Episodes cut by a limit carry no loss
(`loss.mask_truncated`, `train/truncated_rate`). The "token-mean" normaliser is the step's count
of sampled tokens over all ranks (`eva_train.rl.step.loss_normalizer`). LoRA dropout must be 0.
The completeness reward ("csv") judges with the reference model, under FSDP2 with its weights
gathered like the policy's for the rollouts (`eva_train.rl.scoring`).

`training_step` returns `{"record": StepRecord}` (`eva_train.rl.step`), which Lightning passes to
every callback's `on_train_batch_end` as `outputs`: episode dumps (`eva_train.callbacks.episode_dump`)
and failure files (`eva_train.callbacks.failures`) read the step's episodes from it.

Held-out prompts (the data module's validation set) are played once each at `val_temperature`
(greedy by default, as evaluation runs) and logged as `val/reward_mean`, `val/accuracy`, ...:
the learning curve. Under FSDP2 every rank plays its own prompts with the weights gathered,
the micro-batch counts are made equal across ranks, and metrics are the ranks' means.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from eva_core.agent import AgentConfig
from eva_core.backends.transformers_backend import TransformersPolicy
from eva_data.rewards import Judge, RewardConfig, policy_judge
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import AutoProcessor

from eva_train.data.sources import RlItem
from eva_train.encoding.collate import Batch, collate
from eva_train.encoding.episodes import EncodedEpisode
from eva_train.encoding.microbatches import MicroBatch, lockstep_micro_batches
from eva_train.model.distributed import all_gather_rows
from eva_train.model.loading import LoraSpec, ModelSpec
from eva_train.model.optim import OptimSpec, clip_grad_norm
from eva_train.model.sharding import ShardingSpec, is_sharded
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import grpo_loss, importance_weights, sampler_gap
from eva_train.objectives.reference import AdapterReference, ModelReference, ReferenceSpec
from eva_train.rl.rollouts import RolloutSpec
from eva_train.rl.scoring import ScoredEpisode, ScoredRollouts, episode_metrics, play_and_score
from eva_train.rl.step import StepRecord, StepRollout, loss_normalizer, step_rollout
from eva_train.stages.base import PolicyModule

__all__ = ["GRPOLossSpec", "GRPOModule", "RolloutSpec", "VAL_STEP"]

VAL_STEP = -1  # the step of held-out sample keys: training steps count from 0


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
        max_grad_norm: clip the gradients' total norm to this before each optimizer step (verl,
            TRL and OpenRLHF: 1.0); None only measures it. Lightning's `trainer.gradient_clip_val`
            does not apply to manual optimisation (Lightning refuses it), so it lives here. A
            non-finite norm skips the optimizer step, with a warning, as verl does.
        dual_clip: C of dual-clip where A < 0 (verl: 3); None turns it off.
        log_ratio_clamp: bound of the log-ratio before exp (verl: 20); None turns it off.
        mask_truncated: leave episodes cut by a limit out of the loss (`eva_train.rl.step.step_rollout`).
        importance_sampling_cap: weigh each token by min(pi_old / pi_sampler, cap), the truncated
            importance-sampling correction of a sampler whose log-probs differ from the trainer's
            (TRL: 3.0 with vLLM); None (default) trains without it.
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    kl_coef: float = 0.0
    aggregation: str = "token-mean"
    constant: float | None = None
    scale_by_std: bool = True
    passes: int = 1
    micro_batch_size: int = 4
    max_grad_norm: float | None = 1.0
    dual_clip: float | None = 3.0
    log_ratio_clamp: float | None = 20.0
    mask_truncated: bool = True
    importance_sampling_cap: float | None = None


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
        if self.loss_spec.passes < 1 or self.loss_spec.micro_batch_size < 1:
            raise ValueError("passes and micro_batch_size must be >= 1")
        if lora is not None and lora.dropout > 0:
            raise ValueError(f"GRPO needs lora.dropout: 0 (got {lora.dropout}): dropout makes the trained forward "
                             "differ from the sampled one, so the ratio is not 1 on-policy")
        super().__init__(model=model, lora=lora, optim=optim, sharding=sharding,
                         reference=(reference or ReferenceSpec()) if needs_reference else None,
                         optimizer_steps_per_batch=self.loss_spec.passes)
        if self.rollout_spec.temperature <= 0:
            raise ValueError("GRPO samples its episodes: rollout temperature must be > 0")
        if self.rollout_spec.group_size < 2:
            raise ValueError("GRPO compares samples within a group: group_size must be >= 2")
        self.automatic_optimization = False
        self.processor = None
        self.engine: TransformersPolicy | None = None
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite gradient norm

    def configure_model(self) -> None:
        super().configure_model()
        if self.engine is None:
            self.processor = AutoProcessor.from_pretrained(self.model_spec.path)
            self.engine = TransformersPolicy(self.policy, self.processor)

    # ---- the step -------------------------------------------------------------------------------
    def training_step(self, batch: list[RlItem], batch_idx: int) -> dict[str, StepRecord]:
        """Rollout -> score -> advantages -> optimise; the engine takes the new weights, the ranks'
        mean metrics are logged once, and the step's record goes to the callbacks (`outputs`)."""
        step = self.global_step  # the step the episodes are sampled at; `optimise` advances it
        rollout = self.rollout(batch)
        t0 = time.perf_counter()
        metrics = dict(rollout.metrics)
        micro_batches = lockstep_micro_batches(rollout.encoded, self.loss_spec.micro_batch_size,
                                               conversation=lambda e: e.conversation, blank=self.blank_row)
        if micro_batches:  # empty on every rank alike: no rank has an episode with a turn
            metrics |= self.optimise(rollout, micro_batches)
            self.engine.sync_weights()
        metrics["train_s"] = time.perf_counter() - t0
        metrics |= self.step_metrics(num_tokens=int(metrics.get("trained_tokens", 0)), padding_fraction=0.0)
        means = self._log_mean(metrics, prefix="train", batch_size=len(batch))
        self.log("reward", means["reward_mean"], prog_bar=True, logger=False, batch_size=len(batch))
        return {"record": StepRecord(step=step, scored=tuple(rollout.scored), group_size=self.rollout_spec.group_size,
                                     rollout=self.rollout_spec, model=str(self.model_spec.path))}

    def rollout(self, items: list[RlItem]) -> StepRollout:
        """Rollout -> score -> advantages: G episodes per prompt, their rewards, the training sequences."""
        g = self.rollout_spec.group_size
        played = self.play(items, group_size=g, step=self.global_step, config=self.rollout_spec.agent_config())
        return step_rollout(played, self.processor, group_size=g, scale_by_std=self.loss_spec.scale_by_std,
                            mask_truncated=self.loss_spec.mask_truncated)

    def optimise(self, rollout: StepRollout, micro_batches: list[MicroBatch[EncodedEpisode]]) -> dict[str, float]:
        """`passes` optimizer steps over the episodes, micro-batch by micro-batch; a filler's loss
        is multiplied by its weight 0 and left out of the metrics.

        pi_old is the training forward's own log-probs (module doc): the first pass's, detached,
        with one pass; with several, a no-grad forward before the first pass. Each step clips the
        gradients' norm and skips itself when the norm is not finite."""
        spec = self.loss_spec
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        normalizer = loss_normalizer(rollout.encoded, aggregation=spec.aggregation, constant=spec.constant)
        old = [self.forward_logps(micro)[0] for micro in micro_batches] if spec.passes > 1 else None
        sums: dict[str, float] = {}
        gap_max, norms = 0.0, []
        for p in range(spec.passes):
            for m, micro in enumerate(micro_batches):
                loss, metrics = self.micro_batch_loss(micro, rollout.advantages, normalizer=normalizer,
                                                      old=None if old is None else old[m], measure_gap=p == 0)
                self.manual_backward(loss * micro.weight)
                if micro.weight:
                    gap_max = max(gap_max, float(metrics.pop("logp_gap_max", 0.0)))
                    for k, v in {"loss": loss.detach(), **metrics}.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            norms.append(clip_grad_norm(self.policy, spec.max_grad_norm))
            if math.isfinite(norms[-1]):
                optimizer.step()
                scheduler.step()
            else:  # not taken, so not counted: global_step and the schedule count the steps taken
                self.skipped_steps += 1
                rank_zero_warn(f"GRPO step {self.global_step}: gradient norm {norms[-1]}; the optimizer step is "
                               f"skipped ({self.skipped_steps} so far)")
            optimizer.zero_grad(set_to_none=True)
        real = sum(1 for micro in micro_batches if micro.weight)
        # micro-batch means; the sampler gap is measured on the first pass only
        out = {k: v / (real if k.startswith("logp_gap") else real * spec.passes) for k, v in sums.items()
               if k not in ("loss", "trained_tokens")}
        out["logp_gap_max"] = gap_max
        out["loss"] = sums.get("loss", 0.0) / spec.passes  # the summed micro-batches make one step's loss
        out["grad_norm"] = sum(norms) / len(norms)
        out["skipped_steps"] = float(self.skipped_steps)
        out["trained_tokens"] = float(sum(int(e.conversation.trained.sum()) for e in rollout.encoded))
        out["micro_batches"] = float(len(micro_batches))
        return out

    # ---- the pieces of a step -------------------------------------------------------------------
    def play(self, items: list[RlItem], *, group_size: int, step: int, config: AgentConfig) -> ScoredRollouts:
        """Episodes of every prompt (`group_size` each) on the engine, scored with the step's reward;
        when sharded, the policy and the judge's model generate with their weights gathered."""
        sharded = is_sharded(self.policy)
        return play_and_score(self.engine, items, group_size=group_size, step=step, config=config,
                              reward=self.reward_config, judge=self._judge(), model=self.policy if sharded else None,
                              judge_model=self._judge_model() if sharded else None)

    def forward_logps(self, micro: MicroBatch[EncodedEpisode]) -> tuple[Tensor, Batch]:
        """[n, T] log-probs of the micro-batch's sampled tokens under the policy, no gradient
        (pi_old of several passes), and the collated batch."""
        batch = collate(micro.conversations, pad_id=self.processor.tokenizer.pad_token_id).to(self.device)
        with torch.no_grad():
            logps = policy_logprobs(self.policy, batch, suppress=self.engine.suppress,
                                    temperature=self.rollout_spec.temperature)
        return logps[:len(micro.rows)], batch

    def micro_batch_loss(self, micro: MicroBatch[EncodedEpisode], advantages: Tensor, *,
                         normalizer: float | None, old: Tensor | None = None,
                         measure_gap: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """`grpo_loss` of one micro-batch against pi_old: `old` when given, else the forward's own
        log-probs, detached (one pass: ratio exactly 1). The engine's sampling log-probs give the
        `logp_gap_*` metrics (`measure_gap`) and the optional importance-sampling weights."""
        spec = self.loss_spec
        batch = collate(micro.conversations, pad_id=self.processor.tokenizer.pad_token_id).to(self.device)
        n = len(micro.rows)  # rows past n are the blank-image row's
        sampled = torch.zeros((n, batch.trained.shape[1]), dtype=torch.float32, device=self.device)
        for b, e in enumerate(micro.rows):
            sampled[b, :e.sampled_logprobs.numel()] = e.sampled_logprobs
        logps = policy_logprobs(self.policy, batch, suppress=self.engine.suppress,
                                temperature=self.rollout_spec.temperature)[:n]
        old = logps.detach() if old is None else old
        mask = batch.trained[:n]
        weights = (None if spec.importance_sampling_cap is None
                   else importance_weights(old, sampled, cap=spec.importance_sampling_cap))
        ref = self._reference_logps(batch)
        loss, metrics = grpo_loss(
            logps, old, advantages[micro.start:micro.start + n].to(self.device), mask,
            ref_logps=None if ref is None else ref[:n], epsilon=spec.epsilon, epsilon_high=spec.epsilon_high,
            kl_coef=spec.kl_coef, aggregation=spec.aggregation, normalizer=normalizer, dual_clip=spec.dual_clip,
            log_ratio_clamp=spec.log_ratio_clamp, token_weights=weights)
        if measure_gap:
            metrics |= {f"logp_gap_{k}": v for k, v in sampler_gap(logps, sampled, mask).items()}
        return loss, metrics

    def _reference_logps(self, batch: Batch) -> Tensor | None:
        """[B, T] log pi_ref of the batch's trained tokens at the rollout temperature; None without a KL term."""
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

    def _judge_model(self) -> torch.nn.Module | None:
        """The module the "csv" judge generates with: the frozen copy, or the policy (LoRA); None for other rewards."""
        if self.reward_config.name != "csv":
            return None
        return self.reference_model if self.reference_model is not None else self.policy

    def _judge(self) -> Judge | None:
        """The "csv" reward's judge: the reference model (the base under disabled adapters for LoRA)."""
        model = self._judge_model()
        if model is None:
            return None
        judge_engine = TransformersPolicy(model, self.processor)
        if isinstance(self.reference, AdapterReference):

            def judge(question, frames, labels):
                with self.policy.disable_adapter():
                    return policy_judge(judge_engine)(question, frames, labels)

            return judge
        return policy_judge(judge_engine)

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

    # ---- held-out episodes ------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_scored: list[ScoredEpisode] = []

    def validation_step(self, batch: list[RlItem], batch_idx: int) -> None:
        """One episode per held-out prompt at `val_temperature` (greedy: what evaluation runs).
        Sampled ones use the same random streams at every validation (step `VAL_STEP`), so
        successive points of the curve differ by the policy, not by the draw."""
        played = self.play(batch, group_size=1, step=VAL_STEP,
                           config=self.rollout_spec.agent_config(temperature=self.rollout_spec.val_temperature))
        self._val_scored.extend(played.scored)

    def on_validation_epoch_end(self) -> None:
        if self._val_scored:
            gathered, _ = all_gather_rows(self._val_scored)
            self._log_mean(episode_metrics(gathered) | {"episodes": float(len(gathered))}, prefix="val",
                           batch_size=len(gathered))
        self._val_scored = []
