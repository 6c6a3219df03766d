"""FSDP2 sharding of the policy: one `fully_shard` unit per decoder layer and per vision block.

The plan follows torchtitan's (https://github.com/pytorch/torchtitan/blob/main/docs/fsdp.md):
each transformer block is its own unit, so at most one block's full parameters (plus the
root's) are materialised at a time; the input embedding and the untied output head, the two
largest matrices of a Qwen2.5-VL (545M parameters each at 7B), are units of their own; the
root unit keeps the rest (final norm, patch embedding, merger). Blocks are found through the
model's `_no_split_modules` (the class names Hugging Face marks as indivisible: for
Qwen2.5-VL `Qwen2_5_VLDecoderLayer` and `Qwen2_5_VLVisionBlock`), so any model of that family
works without a name list. Tied embeddings stay in the root, since one parameter cannot live
in two units.

`sharding_plan` is a pure walk over the module tree (it runs on a meta-device model without
a process group, which is how the 7B recipe is checked); `apply_fsdp` applies it with
`torch.distributed.fsdp.fully_shard` over a data-parallel device mesh (Lightning's
`ModelParallelStrategy` provides it; on CPU the gloo backend works, which the 2-process test
uses).

`gathered_for_rollouts` serves the rollout phase of online RL: every forward of a sharded
model all-gathers each unit's parameters, so ranks whose episodes differ in length or turn
count would make different numbers of collective calls and hang (and a prefill with images
runs the vision blocks, one without does not). Inside the context every unit is gathered
once and kept gathered, so the rank-local rollouts make no collective call at all; on exit
the units are resharded. The price is the full parameters on every rank for the rollout
phase (15 GB for a 7B model in bfloat16), the memory a separate inference engine would hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from eva_train.model.loading import DTYPES, base_model


@dataclass
class ShardingSpec:
    """FSDP2 options.

    Attributes:
        param_dtype: dtype parameters are all-gathered and computed in (mixed precision);
            None computes in the stored dtype. "bfloat16" over float32 master weights is the
            full fine-tuning recipe.
        reduce_dtype: dtype of the gradient reduce-scatter.
        reshard_after_forward: free each unit's gathered parameters after its forward (ZeRO-3);
            False keeps them until backward (ZeRO-2-like, more memory, less communication).
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory.
    """

    param_dtype: Literal["float32", "bfloat16", "float16"] | None = "bfloat16"
    reduce_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    reshard_after_forward: bool = True
    cpu_offload: bool = False


@dataclass(frozen=True)
class ShardUnit:
    """One FSDP unit of the plan.

    Attributes:
        name: the module's qualified name in the model ("" is the root).
        kind: "vision_block", "decoder_layer", "embedding", "output" or "root".
        num_params: parameters the unit owns (elements, excluding nested units).
    """

    name: str
    kind: str
    num_params: int


def _block_kind(module: nn.Module, block_classes: set[str]) -> str | None:
    name = type(module).__name__
    if name not in block_classes:
        return None
    return "vision_block" if "Vision" in name else "decoder_layer"


def _plan_modules(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(name, kind, module) for every unit, innermost first, root last."""
    inner = base_model(model)
    block_classes = set(getattr(inner, "_no_split_modules", None) or [])
    if not block_classes:
        raise ValueError(f"{type(inner).__name__} declares no _no_split_modules: cannot find its blocks")
    units: list[tuple[str, str, nn.Module]] = []
    for name, module in model.named_modules():
        kind = _block_kind(module, block_classes)
        if kind is not None:
            units.append((name, kind, module))
    if not any(kind == "decoder_layer" for _, kind, _ in units):
        raise ValueError(f"no decoder layer of classes {sorted(block_classes)} found in {type(inner).__name__}")
    names = {id(m): n for n, m in model.named_modules()}
    embed, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    if not tied:
        if embed is not None:
            units.append((names[id(embed)], "embedding", embed))
        if head is not None:
            units.append((names[id(head)], "output", head))
    units.append(("", "root", model))
    return units


def sharding_plan(model: nn.Module) -> list[ShardUnit]:
    """The FSDP units `apply_fsdp` would create, innermost first, root last.

    Args:
        model: a transformers model or a peft model around one (may be on the meta device).

    Returns:
        One `ShardUnit` per unit; the `num_params` of all units sum to the model's parameters.
    """
    units = _plan_modules(model)
    owner: dict[int, int] = {}
    for index, (_, _, module) in enumerate(units):  # innermost first: a nested unit claims first
        for p in module.parameters():
            owner.setdefault(id(p), index)
    counts = [0] * len(units)
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            counts[owner[id(p)]] += p.numel()
    return [ShardUnit(name=name, kind=kind, num_params=counts[i]) for i, (name, kind, _) in enumerate(units)]


def apply_fsdp(model: nn.Module, mesh, spec: ShardingSpec | None = None) -> nn.Module:
    """Shard `model` in place with FSDP2 following `sharding_plan`, and return it.

    Args:
        model: the policy (transformers or peft model), parameters on CPU or the target device.
        mesh: a 1-D data-parallel `DeviceMesh` (Lightning's `device_mesh["data_parallel"]`).
        spec: mixed precision, resharding and offload options.

    Returns:
        The same module, now an `FSDPModule` whose parameters are `DTensor` shards.
    """
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    spec = spec or ShardingSpec()
    if mesh.ndim != 1:
        raise ValueError(f"apply_fsdp shards over a 1-D data-parallel mesh, got {mesh.ndim} dimensions")
    mp = MixedPrecisionPolicy(
        param_dtype=DTYPES[spec.param_dtype] if spec.param_dtype else None,
        reduce_dtype=DTYPES[spec.reduce_dtype],
    )
    offload = CPUOffloadPolicy() if spec.cpu_offload else OffloadPolicy()
    units = _plan_modules(model)
    for name, _, module in units:
        # The root stays gathered after forward: backward starts with it (torchtitan does the same).
        reshard = spec.reshard_after_forward and name != ""
        fully_shard(module, mesh=mesh, mp_policy=mp, offload_policy=offload, reshard_after_forward=reshard)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `fully_shard` has been applied to `model`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module, *, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU (collective: every rank must call it; rank 0 gets it all)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in trained}
    return state


@contextmanager
def gathered_for_rollouts(model: nn.Module) -> Iterator[nn.Module]:
    """Keep every FSDP2 unit of `model` unsharded for the duration (see the module docstring).

    Entering and leaving are collective (every rank must enter, all-gathering in the same
    order); between them forwards are rank-local. A model without FSDP units is left as is.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # FSDP2 has no public getter for reshard_after_forward: keep each parameter group's setting to restore it.
    saved = [[g.post_forward_mesh_info for g in m._get_fsdp_state()._fsdp_param_groups] for m in units]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield model
    finally:
        for unit, infos in zip(units, saved, strict=True):
            for group, info in zip(unit._get_fsdp_state()._fsdp_param_groups, infos, strict=True):
                group.post_forward_mesh_info = info
            unit.reshard()

