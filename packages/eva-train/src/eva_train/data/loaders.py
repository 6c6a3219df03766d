"""Resumable batches: one rank's share of a source read window by window, and the loader the Trainer iterates.

A `BatchStream` reads this rank's items of one epoch from a `Source` (`eva_train.data.sources`)
in windows of a fixed number of items, turns each window into batches (the subclass's step:
`eva_train.data.conversations` encodes, groups by length and collates a window of
conversations; `eva_train.data.prompts` hands a window of prompts out as one step's list) and
yields every batch with the `StreamPosition` that follows it. A position names the window (how
many items precede it, and the source's state before its first item) and how many of its
batches were handed out, so a resumed stream reopens the source at the window's first item and
skips those batches: at most one window is read again, and the batches that follow are
identical to an uninterrupted run's.

`ResumableLoader` is what the Trainer iterates. It remembers the position after the last batch
it handed out, which the data module stores in and restores from checkpoints
(`eva_train.data.datamodules`). Because it also has an exact `__len__`, Lightning does not
prefetch ahead of the step, so the stored position is that of the last trained batch. It is not
a torch DataLoader, so Lightning injects no DistributedSampler: the rank split is the source's,
explicit and deterministic. It reads in the training process, or runs the stream in a
DataLoader with one worker process, which overlaps decoding with the step. At most one worker:
with several, torch's DataLoader interleaves workers' batches and each worker would need its
own position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from eva_train.data.sources import Source

T = TypeVar("T")
B = TypeVar("B")


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream continues.

    Attributes:
        epoch: the epoch in progress.
        window_start: how many of this rank's items of the epoch precede the current window.
        window_state: the source's state before the window's first item (None: epoch start).
        batches_done: batches of that window already handed out.
    """

    epoch: int = 0
    window_start: int = 0
    window_state: dict[str, Any] | None = None
    batches_done: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamPosition:
        """A position from its `dataclasses.asdict` form.

        Also reads the (epoch, state, done) form of GRPO checkpoints: the position after `done`
        prompts with the source's `state` there, which is the start of the window that follows
        (a prompt window is one step's list).
        """
        if "done" in data:
            return cls(int(data["epoch"]), int(data["done"]), data["state"], 0)
        return cls(**data)


class BatchStream(IterableDataset, Generic[T, B]):
    """Batches of one rank's share of a source, each with the position after it (module doc).

    Subclasses say how a window becomes batches: `window_groups` splits it into the items of
    each batch (all of a window's items, each once), `make_batch` builds one batch of them (only
    for batches not skipped on resume).

    Args:
        source: the items.
        batch_size: items per batch; every full window is a multiple of it.
        window: items per window.
        rank, world_size: this process's data-parallel rank and the number of ranks.
    """

    def __init__(self, source: Source[T], *, batch_size: int, window: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1 or window < 1 or window % batch_size:
            raise ValueError(f"a window of {window} items does not hold whole batches of {batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.window = window
        self.rank = rank
        self.world_size = world_size
        self.start = StreamPosition()  # where `__iter__` starts (set by the loader before a worker runs it)

    def num_items(self) -> int:
        """Items of this rank that an epoch uses (all of them here)."""
        return self.source.num_examples(rank=self.rank, world_size=self.world_size)

    def num_batches(self) -> int:
        """Batches per epoch: ceil(items / batch_size), since every full window is a multiple of it."""
        return math.ceil(self.num_items() / self.batch_size)

    def window_groups(self, items: list[T], *, epoch: int, window_start: int) -> list[list[Any]]:
        """The batches of one window, as the list of what each batch is built from."""
        raise NotImplementedError

    def make_batch(self, group: list[Any]) -> B:
        """One batch from one of `window_groups`' groups."""
        raise NotImplementedError

    def batches(self, start: StreamPosition) -> Iterator[tuple[B, StreamPosition]]:
        """Batches of `start.epoch` from `start` on, each with the position after it.

        Raises:
            RuntimeError: the source served fewer items than it promised (`num_examples`).
        """
        total = self.num_items()
        items = self.source.examples(epoch=start.epoch, rank=self.rank, world_size=self.world_size,
                                     state=start.window_state)
        window_start, window_state, skip = start.window_start, start.window_state, start.batches_done
        while window_start < total:
            size = min(self.window, total - window_start)
            chunk = list(islice(items, size))
            if len(chunk) < size:
                raise RuntimeError(f"source ended at item {window_start + len(chunk)} of {total} (rank {self.rank})")
            groups = self.window_groups([item for item, _ in chunk], epoch=start.epoch, window_start=window_start)
            next_start, next_state = window_start + size, chunk[-1][1]
            for j in range(skip, len(groups)):
                if j + 1 < len(groups):
                    after = StreamPosition(start.epoch, window_start, window_state, j + 1)
                elif next_start < total:
                    after = StreamPosition(start.epoch, next_start, next_state, 0)
                else:
                    after = StreamPosition(start.epoch + 1)
                yield self.make_batch(groups[j]), after
            window_start, window_state, skip = next_start, next_state, 0

    def __iter__(self) -> Iterator[tuple[B, StreamPosition]]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError("a BatchStream runs in at most one DataLoader worker (see eva_train.data.loaders)")
        return self.batches(self.start)


class ResumableLoader(Generic[B]):
    """The iterable the Trainer trains on: batches in order, and the position after the last one.

    Args:
        stream: the batches.
        num_workers: 0 (read in the training process) or 1 (in one worker process).
        epoch_fn: returns the trainer's current epoch; a stored position of another epoch is
            discarded (Lightning moved on, e.g. after `limit_train_batches`).
        seed: seeds the DataLoader's own generator, so creating a worker's iterator never draws
            from the global torch RNG (which dropout uses and checkpoints restore).
        resume: continue from `position`; False starts every iteration at epoch 0's first batch
            (held-out data served the same each time).
    """

    def __init__(self, stream: BatchStream[Any, B], *, num_workers: int = 0,
                 epoch_fn: Callable[[], int] | None = None, seed: int = 0, resume: bool = True) -> None:
        if num_workers not in (0, 1):
            raise ValueError(f"num_workers must be 0 or 1 (see eva_train.data.loaders), got {num_workers}")
        self.stream = stream
        self.num_workers = num_workers
        self.epoch_fn = epoch_fn
        self.seed = seed
        self.resume = resume
        self.position = StreamPosition()

    def __len__(self) -> int:
        return self.stream.num_batches()

    def __iter__(self) -> Iterator[B]:
        position = self.position if self.resume else StreamPosition()
        if self.epoch_fn is not None and position.epoch != (epoch := int(self.epoch_fn())):
            position = StreamPosition(epoch=epoch)
        for batch, after in self._batches(position):
            self.position = after
            yield batch

    def _batches(self, start: StreamPosition) -> Iterator[tuple[B, StreamPosition]]:
        if self.num_workers == 0:
            return self.stream.batches(start)
        self.stream.start = start
        # "spawn": a forked worker inherits the locks of the parent's decoding threads (eva-data's
        # synthesis, video readers) and can deadlock in its first decode (measured: 120 s timeout).
        return iter(DataLoader(self.stream, batch_size=None, num_workers=1,
                               generator=torch.Generator().manual_seed(self.seed), prefetch_factor=2,
                               multiprocessing_context="spawn"))
