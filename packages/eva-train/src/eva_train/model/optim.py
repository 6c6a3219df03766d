"""Optimizer and learning-rate schedule shared by the stages: AdamW, linear warmup, cosine decay.

Defaults follow the EVA paper's SFT stage where it states them (learning rate 2e-6 for full
fine-tuning); warmup ratio, weight decay and betas are not stated there and take the values
common to Qwen2.5-VL fine-tuning recipes (LLaMA-Factory, ms-swift): warmup 3% of steps,
weight decay 0.0, betas (0.9, 0.999). Weight decay, when set, skips biases and norm weights
(every parameter with fewer than 2 dimensions), as in nanoGPT.

AdamW's fused CUDA kernel is used only when the trainer does not clip gradients: a fused AdamW
declares that its step unscales gradients itself (`_step_supports_amp_scaling`), and Lightning's
mixed-precision plugins (`bf16-mixed`, `16-mixed`) then refuse gradient clipping at the first
optimizer step (measured: `configs/sft-7b-lora.yaml` with `bf16-mixed` and clipping stops there
on an H200). The unfused (foreach) step costs a few milliseconds more on a LoRA model, far
below one training step. `use_fused_adamw` decides, `build_optimizer` builds; every stage takes
both through `eva_train.stages.base.PolicyModule.configure_optimizers`.

Holds `OptimSpec`, `lr_factor` (the schedule's formula), `parameter_groups`, `use_fused_adamw`
and `build_optimizer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class OptimSpec:
    """AdamW and its schedule.

    Attributes:
        lr: peak learning rate. EVA paper, SFT: 2e-6 (full fine-tuning). LoRA usually wants
            about 100x more (1e-4 to 2e-4).
        weight_decay: decoupled weight decay on matrices (not on biases or norms).
        betas: Adam's (beta1, beta2).
        eps: Adam's epsilon.
        warmup_ratio: fraction of the total optimizer steps spent warming up linearly from 0.
        schedule: "cosine" (to `min_lr_ratio * lr`), "linear" (to `min_lr_ratio * lr`) or
            "constant" after warmup.
        min_lr_ratio: final learning rate as a fraction of `lr`.
    """

    lr: float = 2e-6  # EVA paper, SFT stage
    weight_decay: float = 0.0
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        self.betas = tuple(self.betas)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str = "cosine",
              min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Warmup: f = (step + 1) / warmup_steps for step < warmup_steps (the first step already moves).
    Then with progress p = (step - warmup_steps) / max(1, total_steps - warmup_steps), clipped to [0, 1]:
        cosine:   f = m + (1 - m) * (1 + cos(pi * p)) / 2
        linear:   f = m + (1 - m) * (1 - p)
        constant: f = 1
    where m = min_ratio.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - p)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (matrices) and an undecayed one."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def use_fused_adamw(device_type: str, gradient_clip_val: float | None) -> bool:
    """Whether AdamW may use its fused kernel: on CUDA, when gradients are not clipped (see the module doc)."""
    return device_type == "cuda" and not gradient_clip_val


def build_optimizer(model: nn.Module, spec: OptimSpec, *, total_steps: int,
                    fused: bool = False) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and its per-step schedule.

    Args:
        model: the (possibly sharded) policy.
        spec: optimizer settings.
        total_steps: optimizer steps of the whole run (the trainer's estimate).
        fused: use AdamW's fused kernel (`use_fused_adamw` says when a trainer allows it).
    """
    params = parameter_groups(model, spec.weight_decay)
    optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, fused=fused or None)
    warmup = math.ceil(spec.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=warmup, schedule=spec.schedule,
                               min_ratio=spec.min_lr_ratio),
    )
    return optimizer, scheduler


def clip_grad_norm(model: nn.Module, max_norm: float | None) -> float:
    """The total L2 norm of the trainable parameters' gradients, and, with `max_norm`, the
    gradients scaled in place so that it is at most `max_norm` (torch's `clip_grad_norm_`).

    Under FSDP2 the gradients are sharded DTensors: the norm is taken over every rank's shards,
    so all ranks clip by the same global factor and return the same value. A non-finite norm is
    returned as it is (the gradients are then not usable: skip the step).
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    total = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    if hasattr(total, "full_tensor"):  # a DTensor: gather the reduced norm
        total = total.full_tensor()
    return float(total)
