"""A DataLoader over a `ShardStream` that knows its position: `state_dict()` after any batch,
`load_state_dict()` before iterating, and the resumed loader yields the same remaining batches.

With W workers, a DataLoader over an iterable dataset hands out batches round-robin over the
workers: worker 0's first batch, worker 1's first, ..., worker 0's second, skipping workers
that have finished. Each batch carries the positions of its samples (all from one worker role),
so the loader keeps the latest position per role and the role of the last batch. A new
DataLoader always starts with worker 0, so on resume worker i plays role (i + offset) % W, with
offset the role after the last batch consumed: the rotation, and hence the batch sequence,
continues unchanged. Roles that had finished come back empty and are skipped, as before.

Before starting workers the loader loads the video decoder in its own process, so that forked
workers inherit it: otherwise each worker imports torchcodec itself, which took 7 s per worker
on the shared 2-core machine (measured; most of the cost of a short epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from eva_core.decoders import resolve_backend

from eva_data.shards.position import StreamPosition
from eva_data.shards.sample import ShardSample
from eva_data.shards.stream import ShardStream


def _collate_list(samples: Sequence[ShardSample]) -> list[ShardSample]:
    return list(samples)


class _WithPositions:
    """collate_fn wrapper: (the user's batch, the role and position of its last sample)."""

    def __init__(self, collate: Callable[[list[ShardSample]], Any]):
        self.collate = collate

    def __call__(self, samples: list[ShardSample]) -> tuple[Any, StreamPosition]:
        last = samples[-1].position
        return self.collate(samples), last


class ShardLoader:
    """Batches of one rank's stream, with a resumable position.

    Args:
        stream: the rank's `ShardStream` (without worker/num_workers set).
        batch_size: samples per batch; a worker's last batch of an epoch may be short.
        num_workers: DataLoader worker processes (0: read in this process).
        collate_fn: list of samples -> batch (default: the list itself).
        **dataloader_kwargs: passed to torch's DataLoader (pin_memory, prefetch_factor, ...).
    """

    def __init__(self, stream: ShardStream, *, batch_size: int, num_workers: int = 0,
                 collate_fn: Callable[[list[ShardSample]], Any] | None = None, **dataloader_kwargs):
        if stream.worker is not None:
            raise ValueError("a ShardLoader's stream takes its worker role from the DataLoader; "
                             "do not pass worker/num_workers to it")
        if dataloader_kwargs.get("persistent_workers"):
            raise ValueError("persistent workers would keep the epoch and resume position of the first iteration")
        self.stream, self.batch_size, self.num_workers = stream, batch_size, num_workers
        self.collate = _WithPositions(collate_fn or _collate_list)
        self.kwargs = dataloader_kwargs
        self.epoch = stream.epoch
        self.positions: dict[int, StreamPosition] = {}
        self.next_role = 0
        self.batches = 0  # batches consumed in this epoch

    @property
    def roles(self) -> int:
        return max(1, self.num_workers)

    def __iter__(self) -> Iterator[Any]:
        """One epoch of batches (the rest of it, after `load_state_dict`)."""
        self.stream.set_epoch(self.epoch)
        self.stream.resume = dict(self.positions)
        self.stream.role_offset = self.next_role
        if self.num_workers > 0 and (self.stream.validate_video or self.stream.transform is not None):
            resolve_backend("auto")  # cached: import the decoder once, here, before the fork
        loader = torch.utils.data.DataLoader(self.stream, batch_size=self.batch_size, num_workers=self.num_workers,
                                             collate_fn=self.collate, **self.kwargs)
        for batch, position in loader:
            self.positions[position.role] = position
            self.next_role = (position.role + 1) % self.roles
            self.batches += 1
            yield batch
        self.epoch += 1
        self.positions, self.next_role, self.batches = {}, 0, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume after the last batch consumed (JSON-serialisable)."""
        return {"epoch": self.epoch, "next_role": self.next_role, "batches": self.batches,
                "num_workers": self.num_workers,
                "positions": {str(role): p.to_dict() for role, p in self.positions.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; the next iteration continues the saved epoch.

        Raises:
            ValueError: the state was saved with another number of workers.
        """
        if int(state["num_workers"]) != self.num_workers:
            raise ValueError(f"state saved with {state['num_workers']} workers, loader has {self.num_workers}")
        self.epoch, self.next_role, self.batches = int(state["epoch"]), int(state["next_role"]), int(state["batches"])
        self.positions = {int(r): StreamPosition.from_dict(p) for r, p in state["positions"].items()}

    @property
    def skipped(self) -> dict[str, int]:
        """Corrupt samples and shards skipped so far this epoch, over all roles seen."""
        return {"samples": sum(p.skipped_samples for p in self.positions.values()),
                "shards": sum(p.skipped_shards for p in self.positions.values())}
