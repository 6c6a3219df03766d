"""The SFT stage: imitate teacher trajectories, loss on the assistant's tokens only.

EVA's first stage (paper, "Supervised fine-tuning") teaches the model the tool-call format
and the summary-plan-action-reflection habit from multi-turn trajectories. A batch is a set of
rendered trajectories (`eva_train.encoding.collate.Batch`: the model's chat template, images decoded at
the recorded frame times, `trained` marking assistant tokens); the step is

    batch -> per-token log-probs (`eva_train.objectives.logprobs`) -> `eva_train.objectives.losses.sft_loss` -> log -> loss.

Model loading, LoRA, sharding, optimizer and checkpoints are the shared base's
(`eva_train.stages.base.PolicyModule`). Paper hyperparameters (2 epochs, batch 8, learning rate 2e-6
for full fine-tuning) live in the recipes under `configs/`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from eva_train.encoding.collate import Batch
from eva_train.model.loading import LoraSpec, ModelSpec
from eva_train.model.optim import OptimSpec
from eva_train.model.sharding import ShardingSpec
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import sft_loss
from eva_train.stages.base import PolicyModule


class SFTModule(PolicyModule):
    """Supervised fine-tuning on trajectories.

    Args:
        model: how to load the policy.
        lora: LoRA adapters; None for full fine-tuning.
        optim: optimizer and schedule (paper: lr 2e-6 for full fine-tuning).
        sharding: FSDP2 options (under `ModelParallelStrategy`).
        normalization: "tokens" (every trained token of the micro-batch weighs the same) or
            "sequences" (every trajectory weighs the same); see `sft_loss`.
    """

    def __init__(self, model: ModelSpec, lora: LoraSpec | None = None, optim: OptimSpec | None = None,
                 sharding: ShardingSpec | None = None,
                 normalization: Literal["tokens", "sequences"] = "tokens") -> None:
        super().__init__(model=model, lora=lora, optim=optim, sharding=sharding)
        self.normalization = normalization

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logps = policy_logprobs(self.policy, batch, blank=self.blank_row)
        loss, metrics = sft_loss(logps, batch.trained, normalization=self.normalization)
        metrics |= self.step_metrics(num_tokens=batch.num_tokens, padding_fraction=batch.padding_fraction)
        metrics["truncated"] = float(batch.truncated)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()} | {"train/loss": loss.detach()},
                      prog_bar=False, batch_size=batch.input_ids.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=batch.input_ids.shape[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logps = policy_logprobs(self.policy, batch, blank=self.blank_row)
        loss, metrics = sft_loss(logps, batch.trained, normalization=self.normalization)
        self.log_dict({"val/loss": loss, "val/nll": metrics["nll"]}, prog_bar=True, sync_dist=True,
                      batch_size=batch.input_ids.shape[0])
