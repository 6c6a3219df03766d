"""The reference policy pi_ref of the preference and RL stages (KTO now, GRPO later): one hook, three sources.

A stage asks its reference for the summed log-probability of each row's trained tokens,
`reference.sequence_logps(batch) -> [B]`, under no gradient. Where it comes from is the
`ReferenceSpec`:

- "adapters": the policy itself with its LoRA adapters disabled (peft's `disable_adapter`):
  the frozen base *is* the reference, and no second copy exists. LoRA runs only.
- "copy": a frozen copy of the initial model, loaded from `model.path` like the policy, in
  eval mode, never trained or checkpointed; under FSDP2 it is sharded like the policy
  (`eva_train.model.sharding.apply_fsdp` over the same mesh) so it costs 1/world of its size per rank.
- "precomputed": log-probs computed in one pass before training (`eva-train precompute-ref`,
  `precompute_reference`) and stored beside the data as JSON {sample id: log-prob}; training
  then needs no reference forward. The pass must see the batches training will see (same
  config: data, batch size, seed, world size, epochs); a row it did not see is an error.
- "auto": "adapters" for LoRA runs, "copy" otherwise.

All three give the same numbers for the same batch (tested), since the reference is the
initial model in each case.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from eva_train.encoding.collate import Batch
from eva_train.encoding.masking import EncodedConversation
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.objectives.losses import sequence_logps


class ReferenceError(ValueError):
    """A reference that cannot be built or cannot score a row."""


@dataclass
class ReferenceSpec:
    """Where the reference log-probs come from (see the module docstring).

    Attributes:
        kind: "auto", "adapters", "copy" or "precomputed".
        path: the JSON file of precomputed log-probs (kind "precomputed" only).
    """

    kind: Literal["auto", "adapters", "copy", "precomputed"] = "auto"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "adapters", "copy", "precomputed"):
            raise ReferenceError(f"reference kind must be auto, adapters, copy or precomputed, got {self.kind!r}")
        if (self.kind == "precomputed") != (self.path is not None):
            raise ReferenceError("reference.path is required for kind 'precomputed' and only for it")


class Reference(Protocol):
    def sequence_logps(self, batch: Batch) -> Tensor:
        """[B] log pi_ref of each row's trained tokens, detached."""
        ...


class AdapterReference:
    """The policy with its LoRA adapters disabled.

    Args:
        policy: the peft policy.
        blank: the blank-image row a sharded policy runs beside batches without an image
            (`policy_logprobs`); None when it is not sharded.
    """

    def __init__(self, policy: nn.Module, *, blank: EncodedConversation | None = None) -> None:
        if not callable(getattr(policy, "disable_adapter", None)):
            raise ReferenceError("reference 'adapters' needs a LoRA (peft) policy: use kind 'copy' for full "
                                 "fine-tuning")
        self.policy = policy
        self.blank = blank

    @torch.no_grad()
    def sequence_logps(self, batch: Batch) -> Tensor:
        with self.policy.disable_adapter():
            return sequence_logps(policy_logprobs(self.policy, batch, blank=self.blank), batch.trained)


class ModelReference:
    """A frozen model (the copy of the initial weights).

    Args:
        model: the frozen model.
        blank: the blank-image row a sharded model runs beside batches without an image
            (`policy_logprobs`); None when it is not sharded.
    """

    def __init__(self, model: nn.Module, *, blank: EncodedConversation | None = None) -> None:
        if any(p.requires_grad for p in model.parameters()):
            raise ReferenceError("the reference model must be frozen")
        self.model = model
        self.blank = blank

    @torch.no_grad()
    def sequence_logps(self, batch: Batch) -> Tensor:
        self.model.eval()  # Lightning's `module.train()` at fit start reaches this submodule too
        return sequence_logps(policy_logprobs(self.model, batch, blank=self.blank), batch.trained)


class PrecomputedReference:
    """Log-probs looked up by sample id in a table written by `precompute_reference`."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrecomputedReference:
        file = Path(path)
        if not file.is_file():
            raise ReferenceError(f"no precomputed reference log-probs at {file}: run `eva-train precompute-ref "
                                 "--config CONFIG --out FILE` first")
        return cls(json.loads(file.read_text(encoding="utf-8"))["logps"])

    def sequence_logps(self, batch: Batch) -> Tensor:
        if not batch.sample_ids:
            raise ReferenceError("precomputed reference log-probs need the batch's sample ids")
        missing = [s for s in batch.sample_ids if s not in self.table]
        if missing:
            raise ReferenceError(f"{len(missing)} rows have no precomputed reference log-prob, e.g. {missing[0]!r}: "
                                 "was the table computed with this config (data, batch size, seed, world size, "
                                 "epochs)?")
        return torch.tensor([self.table[s] for s in batch.sample_ids], dtype=torch.float32,
                            device=batch.input_ids.device)


def resolved_kind(spec: ReferenceSpec, *, lora: bool) -> str:
    """The spec's kind with "auto" decided: adapters for LoRA, copy otherwise."""
    if spec.kind == "auto":
        return "adapters" if lora else "copy"
    if spec.kind == "adapters" and not lora:
        raise ReferenceError("reference 'adapters' needs a LoRA run: use kind 'copy' for full fine-tuning")
    return spec.kind


def write_table(table: dict[str, float], path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """Write precomputed log-probs as JSON {"meta": ..., "logps": {sample id: log-prob}}."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"meta": meta or {}, "logps": table}), encoding="utf-8")
    return file
