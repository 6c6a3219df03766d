"""The training stream: samples -> encoded, length-grouped, typed batches, with a resumable position.

`ConversationStream` reads a window of `window_batches * batch_size` samples from an
`ExampleSource`, encodes each (the pluggable `encode` step; by default `encode_sample`: render
and mask with `eva_train.encoding.masking`, truncate to `max_length` never through an image, keep the
sample's id and metadata), groups the window by length into batches
(`eva_train.encoding.collate.group_by_length`, order shuffled by a seed derived from the run seed, the
epoch and the window), turns each group into the stage's batch type (the pluggable `collate`
step: `collate` gives an `SFTBatch`, `collate_kto` a `KTOBatch` with the rows' labels) and
yields it with the `StreamPosition` that follows it. `SFTStream` is the stream with SFT's steps.

`ResumableLoader` is what the Trainer iterates. It runs the stream in a DataLoader (0 or 1
worker process) and remembers the position after the last batch it handed out, which the data
module stores in and restores from checkpoints (`eva_train.data.datamodules`). Because it also has an
exact `__len__`, Lightning does not prefetch ahead of the step, so the stored position is that
of the last trained batch.
A resumed stream reopens the source at the window's first sample (the source's own state,
stored in the position) and skips the window's batches already trained: at most one window is decoded again, and the batches that follow are
identical to an uninterrupted run's.

At most one worker: with several, torch's DataLoader interleaves workers' batches and each
worker would need its own position; one worker already overlaps decoding with the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from eva_train.data.sources import ChatSample, ExampleSource
from eva_train.encoding.collate import Batch, collate, group_by_length
from eva_train.encoding.masking import EncodedConversation, encode_conversation, truncate

Encode = Callable[[Any, ChatSample, int], EncodedConversation]
"""(processor, sample, max_length) -> the encoded sample; must be a module-level function (a worker pickles it)."""
Collate = Callable[..., Batch]
"""(encoded samples, *, pad_id, image_processor) -> the stage's batch."""


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream continues.

    Attributes:
        epoch: the epoch in progress.
        window_start: how many of this rank's samples of the epoch precede the current window.
        window_state: the source's state before the window's first sample (None: epoch start).
        batches_done: batches of that window already trained.
    """

    epoch: int = 0
    window_start: int = 0
    window_state: dict[str, Any] | None = None
    batches_done: int = 0


def window_seed(seed: int, epoch: int, window_start: int) -> int:
    """The batch-order seed of one window: distinct per run seed, epoch and window."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + window_start


def encode_sample(processor, sample: ChatSample, max_length: int) -> EncodedConversation:
    """Render, mask and truncate one sample, keeping its id and metadata (labels live there).

    Frames stay uint8 until their batch is collated (see `eva_train.encoding.masking`).
    """
    encoded = encode_conversation(processor, sample.messages, sample.trained_turns, with_pixels=False)
    return replace(truncate(encoded, max_length), sample_id=sample.sample_id, meta=dict(sample.meta))


def _load_processor(path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


class ConversationStream(IterableDataset):
    """Length-grouped batches of encoded conversations from one rank's share of a source.

    Args:
        source: the samples.
        processor_path: folder of the model's processor (chat template, image processor).
        batch_size: conversations per batch.
        max_length: tokens per conversation after truncation.
        window_batches: batches per length-grouping window (a window holds
            window_batches * batch_size samples); larger windows pad less and shuffle less.
        seed: seeds the batch order within windows.
        rank, world_size: this process's data-parallel rank and the number of ranks.
        shuffle: shuffle batch order within windows (validation streams keep the order).
        encode: the encode step (module-level function; see `Encode`).
        collate: the batching step; decides the batch type (see `Collate`).
    """

    def __init__(self, source: ExampleSource, processor_path: str, *, batch_size: int, max_length: int,
                 window_batches: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, encode: Encode = encode_sample, collate: Collate = collate) -> None:
        if batch_size < 1 or window_batches < 1 or max_length < 1:
            raise ValueError("batch_size, window_batches and max_length must be positive")
        self.source = source
        self.processor_path = processor_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.window_batches = window_batches
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.encode = encode
        self.collate = collate
        self.start = StreamPosition()
        self._processor = None

    @property
    def processor(self):
        if self._processor is None:
            self._processor = _load_processor(self.processor_path)
        return self._processor

    def __getstate__(self):  # workers load their own processor
        state = dict(self.__dict__)
        state["_processor"] = None
        return state

    def num_samples(self) -> int:
        return self.source.num_examples(rank=self.rank, world_size=self.world_size)

    def num_batches(self) -> int:
        """Batches per epoch: ceil(samples / batch_size), since every full window is a multiple of it."""
        return math.ceil(self.num_samples() / self.batch_size)

    def batches(self, start: StreamPosition) -> Iterator[tuple[Batch, StreamPosition]]:
        """Batches of `start.epoch` from `start` on, each with the position after it."""
        processor = self.processor
        pad_id = processor.tokenizer.pad_token_id
        total = self.num_samples()
        window = self.window_batches * self.batch_size
        samples = self.source.examples(epoch=start.epoch, rank=self.rank, world_size=self.world_size,
                                       state=start.window_state)
        window_start, window_state, skip = start.window_start, start.window_state, start.batches_done
        while window_start < total:
            chunk = list(islice(samples, min(window, total - window_start)))
            if not chunk:
                raise RuntimeError(f"source ended at sample {window_start} of {total} (rank {self.rank})")
            encoded = [self.encode(processor, s, self.max_length) for s, _ in chunk]
            groups = group_by_length([len(e) for e in encoded], self.batch_size,
                                     seed=window_seed(self.seed, start.epoch, window_start), shuffle=self.shuffle)
            next_start, next_state = window_start + len(chunk), chunk[-1][1]
            for j, group in enumerate(groups):
                if j < skip:
                    continue
                if j + 1 < len(groups):
                    after = StreamPosition(start.epoch, window_start, window_state, j + 1)
                elif next_start < total:
                    after = StreamPosition(start.epoch, next_start, next_state, 0)
                else:
                    after = StreamPosition(start.epoch + 1)
                yield self.collate([encoded[i] for i in group], pad_id=pad_id,
                                   image_processor=processor.image_processor), after
            window_start, window_state, skip = next_start, next_state, 0

    def __iter__(self) -> Iterator[tuple[Batch, StreamPosition]]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError("ConversationStream runs in at most one DataLoader worker (see eva_train.data.stream)")
        return self.batches(self.start)


class SFTStream(ConversationStream):
    """The stream with SFT's steps: `encode_sample` and `collate` (`SFTBatch`)."""

    def __init__(self, source: ExampleSource, processor_path: str, **options: Any) -> None:
        super().__init__(source, processor_path, **options, encode=encode_sample, collate=collate)


class ResumableLoader:
    """The iterable the Trainer trains on: batches in order, and the position after the last one.

    Args:
        stream: the batches.
        num_workers: 0 (decode in the training process) or 1 (in one worker process).
        epoch_fn: returns the trainer's current epoch; a stored position of another epoch is
            discarded (Lightning moved on, e.g. after `limit_train_batches`).
        seed: seeds the DataLoader's own generator, so creating iterators never draws from the
            global torch RNG (which dropout uses and checkpoints restore).
    """

    def __init__(self, stream: ConversationStream, *, num_workers: int = 0, epoch_fn: Callable[[], int] | None = None,
                 seed: int = 0) -> None:
        if num_workers not in (0, 1):
            raise ValueError(f"num_workers must be 0 or 1 (see eva_train.data.stream), got {num_workers}")
        self.stream = stream
        self.num_workers = num_workers
        self.epoch_fn = epoch_fn
        self.seed = seed
        self.position = StreamPosition()

    def __len__(self) -> int:
        return self.stream.num_batches()

    def __iter__(self) -> Iterator[Batch]:
        position = self.position
        if self.epoch_fn is not None and position.epoch != (epoch := int(self.epoch_fn())):
            position = StreamPosition(epoch=epoch)
        self.stream.start = position
        # "spawn": a forked worker inherits the locks of the parent's decoding threads (eva-data's
        # synthesis, video readers) and can deadlock in its first decode (measured: 120 s timeout).
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(self.seed),
                            prefetch_factor=2 if self.num_workers else None,
                            multiprocessing_context="spawn" if self.num_workers else None)
        for batch, after in loader:
            self.position = after
            yield batch
