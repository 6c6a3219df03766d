"""Gathering per-row data across data-parallel ranks (for batch-level statistics such as KTO's z0).

`all_gather_rows` concatenates each rank's list in rank order: on one process it returns the
list itself. It uses `torch.distributed.all_gather_object`, which takes any picklable rows of
any count per rank (the last batch of an epoch may be shorter) and works on gloo and NCCL; the
rows exchanged here are short (prompt token ids, a few floats per row), never activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_rows(rows: Sequence[Any]) -> tuple[list[Any], int]:
    """(every rank's rows concatenated in rank order, the global index of this rank's first row)."""
    rank, size = world()
    if size == 1:
        return list(rows), 0
    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, list(rows))
    offset = sum(len(part) for part in gathered[:rank])
    return [row for part in gathered for row in part], offset
