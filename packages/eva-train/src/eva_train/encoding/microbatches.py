"""Micro-batches that every data-parallel rank runs in lockstep.

Holds `MicroBatch` and `lockstep_micro_batches`.

Under FSDP2 every forward gathers parameters and every backward reduces gradients, collectively:
all ranks must run the same number of forwards and backwards, through the same units in the same
order. A step whose rows are produced on each rank (GRPO's episodes: a rank whose episodes ended
before a turn has fewer) does not give that by itself. `lockstep_micro_batches` makes it so:

- the ranks agree on the number of micro-batches (the largest rank's, `all_gather_rows`); a rank
  with fewer repeats its last micro-batch with weight 0 (a filler: the same forward and
  backward, its loss multiplied by 0, so nothing changes but the collectives match);
- a micro-batch without an image gets a blank-image row (`eva_train.encoding.episodes.blank_image_row`)
  when the caller passes one (a sharded model): the vision tower is a set of FSDP2 units of its
  own and must run on every rank, and the blank row trains nothing and leaves the other rows'
  outputs unchanged.

On one process with no blank row the micro-batches are the rows cut in order, all of weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from eva_train.encoding.masking import EncodedConversation
from eva_train.model.distributed import all_gather_rows, world

R = TypeVar("R")


@dataclass(frozen=True)
class MicroBatch(Generic[R]):
    """One micro-batch of this rank's rows.

    Attributes:
        rows: its rows (a filler's are the last real micro-batch's).
        start: index of `rows[0]` in the rank's list, to slice per-row tensors (advantages, ...).
        weight: 1.0, or 0.0 for a filler (multiply its loss by this before the backward).
        conversations: what to collate: the rows' conversations, then a blank-image row if one
            was added; the model's outputs past `len(rows)` belong to it and are dropped.
    """

    rows: list[R]
    start: int
    weight: float
    conversations: list[EncodedConversation]

    def __post_init__(self) -> None:
        if not self.rows or len(self.conversations) not in (len(self.rows), len(self.rows) + 1):
            raise ValueError(f"a micro-batch of {len(self.rows)} rows cannot collate {len(self.conversations)} "
                             "conversations")


def _itself(row):
    return row


def lockstep_micro_batches(rows: Sequence[R], size: int, *,
                           conversation: Callable[[R], EncodedConversation] = _itself,
                           blank: EncodedConversation | None = None) -> list[MicroBatch[R]]:
    """This rank's rows cut into micro-batches of `size`, as many as on every other rank.

    Collective: every rank calls it once per step, with its own rows.

    Args:
        rows: this rank's rows, in order (encoded conversations, or records that hold one).
        size: rows per micro-batch (the last real one may be shorter).
        conversation: a row's encoded conversation (default: the row is one).
        blank: the row to add to a micro-batch without an image (`blank_image_row`) when the model
            is sharded; None adds nothing.

    Returns:
        The micro-batches, the same number on every rank: this rank's in order (weight 1), then
        fillers repeating the last (weight 0). Empty when no rank has a row.

    Raises:
        RuntimeError: this rank has no row while another rank has some (nothing to repeat).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    own = math.ceil(len(rows) / size)
    counts, _ = all_gather_rows([own])
    total = max(counts)
    if own == 0 and total:
        raise RuntimeError(f"rank {world()[0]} has no row to train on while another rank has {total} "
                           "micro-batches")
    out = []
    for m in range(total):
        start = min(m, own - 1) * size
        part = list(rows[start:start + size])
        conversations = [conversation(r) for r in part]
        if blank is not None and all(c.pixel_values is None and c.images is None for c in conversations):
            conversations.append(blank)
        out.append(MicroBatch(rows=part, start=start, weight=1.0 if m < own else 0.0, conversations=conversations))
    return out
