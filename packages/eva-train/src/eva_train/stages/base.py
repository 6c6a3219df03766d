"""The shared base of the stage modules: loading, LoRA, sharding, optimizer, checkpoints, step metrics.

`PolicyModule` is a LightningModule that owns the policy and nothing stage-specific. A stage
(`eva_train.stages.sft`, `.kto`, `.grpo`) subclasses it and writes `training_step` as a recipe:
batch -> log-probs -> a pure loss function -> one `log_dict` -> loss. Stages never inherit from
each other.

- `configure_model` loads the policy (`eva_train.model.loading.load_model`) and, under Lightning's
  `ModelParallelStrategy`, shards it with FSDP2 (`eva_train.model.sharding.apply_fsdp`) over the
  data-parallel mesh. It runs once per process, after the distributed setup; single-device and
  DDP runs take the same path without the sharding.
- Under FSDP2 it also builds `blank_row` (`eva_train.encoding.episodes.blank_image_row`), which
  every forward of a batch without an image runs beside (`policy_logprobs(blank=)`, the
  references too): the vision blocks are FSDP2 units, and a rank whose batch is text only would
  skip their gathers while another rank's batch runs them, and hang. The row trains nothing and
  is dropped from the log-probs, so losses, normalisers and KTO's pairs never see it.
- The reference hook: a stage that needs pi_ref (KTO, GRPO) passes a `ReferenceSpec`,
  and `configure_model` builds `self.reference` beside the policy (`eva_train.objectives.reference`: the
  policy with adapters disabled, a frozen copy sharded like the policy, or precomputed
  log-probs). A frozen copy is the submodule `reference_model`, never in checkpoints.
- `configure_optimizers`: AdamW with warmup and cosine decay over the run's optimizer steps
  (`eva_train.model.optim`): the trainer's estimated batches times `optimizer_steps_per_batch`
  (1, or GRPO's `passes`); fused on CUDA unless the trainer clips gradients.
- Checkpoints hold only the trained parameters (LoRA adapters, or the unfrozen weights): the
  frozen ones are reloaded from `model.path`, which the checkpoint's hyperparameters name.
  A 7B LoRA checkpoint is then tens of MB, not 16 GB. The torch RNG state is saved and
  restored too, so dropout continues the same stream after a resume (the saving rank's state is
  restored on every rank: exact on one process, approximate with dropout on several).
- The specs are stored as plain dicts under the checkpoint's "eva_train" entry, so checkpoints
  load with `weights_only=True` and export needs nothing but the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from transformers import AutoProcessor

from eva_train.encoding.episodes import blank_image_row
from eva_train.encoding.masking import EncodedConversation
from eva_train.model.loading import SPECS_KEY, LoraSpec, ModelSpec, load_model
from eva_train.model.optim import OptimSpec, build_optimizer, use_fused_adamw
from eva_train.model.sharding import ShardingSpec, apply_fsdp
from eva_train.model.throughput import StepClock, peak_memory_bytes
from eva_train.objectives.reference import (
    AdapterReference,
    ModelReference,
    PrecomputedReference,
    Reference,
    ReferenceSpec,
    resolved_kind,
)

"""Checkpoint entry holding the specs. Not Lightning's `hyper_parameters`: LightningCLI would
re-parse those as the model's arguments on resume, overriding the config given."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint holds parameters this module does not have."""


class PolicyModule(L.LightningModule):
    """Base of the stage modules; see the module docstring.

    Args:
        model: how to load the policy.
        lora: LoRA adapters; None fine-tunes the base weights (those not frozen by `model`).
        optim: optimizer and schedule.
        sharding: FSDP2 options, used under `ModelParallelStrategy` only.
        reference: build a reference policy (stages that need pi_ref); None builds none.
        optimizer_steps_per_batch: optimizer steps a training batch makes (more than 1 for a
            stage that optimises by hand over each batch several times); the schedule's length
            is the trainer's estimated batches times this.
    """

    def __init__(self, model: ModelSpec, lora: LoraSpec | None = None, optim: OptimSpec | None = None,
                 sharding: ShardingSpec | None = None, reference: ReferenceSpec | None = None,
                 optimizer_steps_per_batch: int = 1) -> None:
        super().__init__()
        if optimizer_steps_per_batch < 1:
            raise ValueError(f"optimizer_steps_per_batch must be >= 1, got {optimizer_steps_per_batch}")
        self.optimizer_steps_per_batch = optimizer_steps_per_batch
        self.model_spec = model
        self.lora_spec = lora
        self.optim_spec = optim or OptimSpec()
        self.sharding_spec = sharding or ShardingSpec()
        # Frozen weights are not in checkpoints; `on_load_checkpoint` checks the rest instead.
        self.strict_loading = False
        self.reference_spec = reference
        self.policy: torch.nn.Module | None = None
        self.reference: Reference | None = None
        self.reference_model: torch.nn.Module | None = None
        self.blank_row: EncodedConversation | None = None  # built when sharded
        self._clock = StepClock()

    # ---- building -------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.policy is not None:  # `validate` after `fit` calls this again
            return
        policy = load_model(self.model_spec, self.lora_spec)
        dp_mesh = self._data_parallel_mesh()
        if dp_mesh is not None:
            apply_fsdp(policy, dp_mesh, self.sharding_spec)
            self.blank_row = blank_image_row(AutoProcessor.from_pretrained(self.model_spec.path))
        self.policy = policy
        if self.reference_spec is not None:
            self.reference = self.build_reference(self.reference_spec, dp_mesh)

    def _data_parallel_mesh(self):
        mesh = self._device_mesh
        if mesh is None:
            return None
        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            raise ValueError("eva-train shards with FSDP2 only: set the strategy's tensor_parallel_size to 1 "
                             "and data_parallel_size to the number of processes")
        return mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh

    def build_reference(self, spec: ReferenceSpec, dp_mesh=None) -> Reference:
        """The reference of `spec` for this policy (see `eva_train.objectives.reference`)."""
        kind = resolved_kind(spec, lora=self.lora_spec is not None)
        if kind == "adapters":
            return AdapterReference(self.policy, blank=self.blank_row)
        if kind == "precomputed":
            return PrecomputedReference.load(spec.path)
        copy = load_model(self.model_spec, None).requires_grad_(False).eval()
        if dp_mesh is not None:
            apply_fsdp(copy, dp_mesh, self.sharding_spec)
        self.reference_model = copy  # a submodule: Lightning moves it; checkpoints leave it out
        return ModelReference(copy, blank=self.blank_row)

    def configure_optimizers(self) -> dict[str, Any]:
        fused = use_fused_adamw(self.device.type, self.trainer.gradient_clip_val)
        steps = int(self.trainer.estimated_stepping_batches) * self.optimizer_steps_per_batch
        optimizer, scheduler = build_optimizer(self.policy, self.optim_spec, fused=fused, total_steps=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- step metrics ---------------------------------------------------------------------
    def step_metrics(self, *, num_tokens: int, padding_fraction: float) -> dict[str, float]:
        """Learning rate, tokens/s (of the previous step), padding fraction and peak memory (GiB)."""
        metrics = {"padding_fraction": float(padding_fraction),
                   "peak_mem_gib": peak_memory_bytes(self.device) / 2**30}
        if self.trainer is not None and self.trainer.lr_scheduler_configs:
            metrics["lr"] = float(self.trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0])
        rate = self._clock.tick(num_tokens)
        if rate is not None:
            metrics["tokens_per_s"] = rate
        return metrics

    def on_train_epoch_start(self) -> None:
        self._clock.reset()  # do not count validation or the epoch boundary as training time

    # ---- checkpoints ----------------------------------------------------------------------
    def trained_state_keys(self) -> set[str]:
        """Checkpoint keys of the trained parameters (`policy.` + parameter name)."""
        return {f"policy.{name}" for name, p in self.policy.named_parameters() if p.requires_grad}

    def checkpoint_specs(self) -> dict[str, Any]:
        """What rebuilds the policy from a checkpoint (`eva_train.model.export`), as plain dicts."""
        return {
            "stage": type(self).__name__,
            "model": asdict(self.model_spec),
            "lora": asdict(self.lora_spec) if self.lora_spec is not None else None,
            "optim": asdict(self.optim_spec),
            "sharding": asdict(self.sharding_spec),
            "reference": asdict(self.reference_spec) if self.reference_spec is not None else None,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SPECS_KEY] = self.checkpoint_specs()
        if "state_dict" in checkpoint:
            keep = self.trained_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state and self.policy is not None:
            known = set(self.state_dict().keys())
            unknown = sorted(k for k in state if k not in known)
            if unknown:
                raise CheckpointMismatchError(f"{len(unknown)} checkpoint entries match no parameter, e.g. "
                                              f"{unknown[:3]}: was it trained with another model or LoRA spec?")
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
