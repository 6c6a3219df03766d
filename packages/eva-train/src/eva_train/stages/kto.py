"""The KTO stage: make desirable trajectories more likely and undesirable ones less, from single labels.

EVA's second stage (paper, "KTO"; Ethayarajh et al., 2024) corrects the SFT model's typical
failures (answering without visual evidence, sampling too little or too much) from
trajectories labelled desirable or undesirable one by one, which suits multi-turn episodes
where paired preferences do not exist. A batch is a `KTOBatch` (rendered trajectories with
`desirable: bool[B]`); the step is

    batch -> policy log-probs, reference log-probs (`eva_train.objectives.reference`)
          -> mismatched pairs over the global batch (`eva_train.encoding.kl_pairs`) -> their log-probs
          -> `eva_train.objectives.losses.kto_loss` -> one `log_dict` -> loss.

Only assistant tokens are scored (tool turns and frames are context), unlike TRL's
`KTOTrainer`, which trains on every completion token. The pairs' policy log-probs are computed
without gradient (z0 is detached in the paper). Four forwards a step: policy on the batch (with
gradient) and on the pairs, reference on both (none with precomputed log-probs).

With `sft_weight` alpha > 0 the desirable rows' trained tokens also carry the SFT loss (their mean
negative log-likelihood, `sft_loss`), as preference methods anchor the chosen side (Pang et al.,
2024, "Iterative Reasoning Preference Optimization", the NLL term):

    L = L_KTO + alpha * NLL(desirable rows' trained tokens)

Without it, pushing undesirable tokens down is cheap (an unlikely token can always fall further)
and on a small model it drags the successes' own tokens down with it: the desirable rewards fall
too. Default 0: the paper's KTO.

Departure: the paper's global batch is the optimizer's; here z0 is estimated per micro-batch
across data-parallel ranks (rows of accumulated micro-batches are not pooled).

Metrics (`train/` and `val/`): loss, z0, reward_desirable and reward_undesirable (mean implied
reward r = log pi_theta - log pi_ref of each label's rows, in nats), margin, accuracy_desirable
and accuracy_undesirable (share of rows on the right side of z0). Under several ranks the
loss and z0 are global; the per-label metrics are this rank's rows (rank 0 is what is logged).
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from eva_train.encoding.collate import KTOBatch
from eva_train.encoding.kl_pairs import batch_prompts, mismatched_batch
from eva_train.model.distributed import all_gather_rows
from eva_train.model.loading import LoraSpec, ModelSpec
from eva_train.model.optim import OptimSpec
from eva_train.model.sharding import ShardingSpec
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import kto_loss, kto_weight_ratio, sequence_logps, sft_loss
from eva_train.objectives.reference import ReferenceSpec
from eva_train.stages.base import PolicyModule


class KTOModule(PolicyModule):
    """KTO on labelled trajectories.

    Args:
        model: how to load the policy (the SFT model).
        lora: LoRA adapters; None for full fine-tuning.
        optim: optimizer and schedule (EVA: lr 2e-6).
        sharding: FSDP2 options (under `ModelParallelStrategy`).
        reference: where pi_ref comes from (default: disabled adapters for LoRA, a frozen copy otherwise).
        beta: KTO's beta (EVA: 0.1).
        desirable_weight, undesirable_weight: lambda_D and lambda_U (KTO paper: keep
            lambda_D n_D / (lambda_U n_U) in [1, 4/3]; checked against the data's label counts
            when the source can count them, with a warning).
        sft_weight: alpha, the weight of the SFT loss on the desirable rows (module doc); 0: KTO alone.
    """

    def __init__(self, model: ModelSpec, lora: LoraSpec | None = None, optim: OptimSpec | None = None,
                 sharding: ShardingSpec | None = None, reference: ReferenceSpec | None = None, beta: float = 0.1,
                 desirable_weight: float = 1.0, undesirable_weight: float = 1.0, sft_weight: float = 0.0) -> None:
        super().__init__(model=model, lora=lora, optim=optim, sharding=sharding,
                         reference=reference or ReferenceSpec())
        if beta <= 0 or desirable_weight <= 0 or undesirable_weight <= 0:
            raise ValueError("beta, desirable_weight and undesirable_weight must be positive")
        if sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {sft_weight}")
        self.sft_weight = sft_weight
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight

    def on_fit_start(self) -> None:
        counts = getattr(getattr(self.trainer.datamodule, "train_source", None), "label_counts", None)
        if callable(counts):
            n_d, n_u = counts()
            kto_weight_ratio(n_d, n_u, desirable_weight=self.desirable_weight,
                             undesirable_weight=self.undesirable_weight)

    def kto_step(self, batch: KTOBatch) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Batch -> log-probs of the rows and of their mismatched pairs -> `kto_loss`.

        Returns None for a global batch of one row (an epoch's remainder: it has no mismatched
        pair); `KTODataModule` refuses configurations where every batch would be one row.
        """
        prompts, offset = all_gather_rows(batch_prompts(batch))
        if len(prompts) < 2:
            rank_zero_warn("skipped a global batch of 1 trajectory (the end of an epoch): KTO's z0 needs 2")
            return None
        pairs = mismatched_batch(batch, prompts, offset)
        token_logps = policy_logprobs(self.policy, batch, blank=self.blank_row)
        policy = sequence_logps(token_logps, batch.trained)
        with torch.no_grad():
            pair_policy = sequence_logps(policy_logprobs(self.policy, pairs, blank=self.blank_row), pairs.trained)
        reference = self.reference.sequence_logps(batch)
        pair_reference = self.reference.sequence_logps(pairs)
        local = torch.stack([pair_policy, pair_reference], dim=1).cpu().tolist()
        gathered, _ = all_gather_rows(local)
        kl = torch.tensor(gathered, dtype=torch.float32, device=policy.device)
        loss, metrics = kto_loss(policy, reference, batch.desirable, kl_policy_logps=kl[:, 0],
                                 kl_reference_logps=kl[:, 1], beta=self.beta, desirable_weight=self.desirable_weight,
                                 undesirable_weight=self.undesirable_weight)
        if self.sft_weight > 0:
            desirable = batch.trained & batch.desirable.to(batch.trained.device)[:, None]
            nll, _ = sft_loss(token_logps, desirable)
            loss = loss + self.sft_weight * nll
            metrics["nll_desirable"] = nll.detach()
        return loss, metrics

    def training_step(self, batch: KTOBatch, batch_idx: int) -> Tensor | None:
        result = self.kto_step(batch)
        if result is None:
            return None
        loss, metrics = result
        # Per-label metrics are absent from batches without that label (NaN is not logged).
        logged = {k: v for k, v in metrics.items() if not math.isnan(float(v))}
        logged |= self.step_metrics(num_tokens=batch.num_tokens, padding_fraction=batch.padding_fraction)
        logged["truncated"] = float(batch.truncated)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, batch_size=batch.rows)
        self.log("train/loss", loss.detach(), sync_dist=True, batch_size=batch.rows)  # global (equal rows per rank)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=batch.rows)
        return loss

    def validation_step(self, batch: KTOBatch, batch_idx: int) -> None:
        result = self.kto_step(batch)
        if result is None:
            return
        loss, metrics = result
        logged = {k: v for k, v in metrics.items() if not math.isnan(float(v)) and not k.startswith("n_")}
        self.log_dict({f"val/{k}": v for k, v in logged.items()}, batch_size=batch.rows)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch.rows)
