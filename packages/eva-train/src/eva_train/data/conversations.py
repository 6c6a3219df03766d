"""Conversations as training batches: encoded, length-grouped and collated into the stage's batch type.

`ConversationStream` is the `BatchStream` (`eva_train.data.loaders`: windows, positions,
resume) of SFT and KTO. It reads windows of `window_batches * batch_size` conversations from a
`Source[ChatSample]`, encodes each (the pluggable `encode` step; by default `encode_sample`:
render and mask with `eva_train.encoding.masking`, truncate to `max_length` never through an
image, keep the sample's id and metadata), groups the window by length into batches
(`eva_train.encoding.collate.group_by_length`, order shuffled by a seed derived from the run
seed, the epoch and the window) and turns each group into the stage's batch type (the pluggable
`collate` step: `collate` gives an `SFTBatch`, `collate_kto` a `KTOBatch` with the rows'
labels). `SFTStream` is the stream with SFT's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from eva_train.data.loaders import BatchStream
from eva_train.data.sources import ChatSample, Source
from eva_train.encoding.collate import Batch, collate, group_by_length
from eva_train.encoding.masking import EncodedConversation, encode_conversation, truncate

Encode = Callable[[Any, ChatSample, int], EncodedConversation]
"""(processor, sample, max_length) -> the encoded sample; must be a module-level function (a worker pickles it)."""
Collate = Callable[..., Batch]
"""(encoded samples, *, pad_id, image_processor) -> the stage's batch."""


def window_seed(seed: int, epoch: int, window_start: int) -> int:
    """The batch-order seed of one window: distinct per run seed, epoch and window."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + window_start


def encode_sample(processor, sample: ChatSample, max_length: int) -> EncodedConversation:
    """Render, mask and truncate one sample, keeping its id and metadata (labels live there).

    Frames stay uint8 until their batch is collated (see `eva_train.encoding.masking`).
    """
    encoded = encode_conversation(processor, sample.messages, sample.trained_turns, with_pixels=False,
                                  trained_from=sample.trained_from)
    return replace(truncate(encoded, max_length), sample_id=sample.sample_id, meta=dict(sample.meta))


def _load_processor(path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


class ConversationStream(BatchStream[ChatSample, Batch]):
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

    def __init__(self, source: Source[ChatSample], processor_path: str, *, batch_size: int, max_length: int,
                 window_batches: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, encode: Encode = encode_sample, collate: Collate = collate) -> None:
        if batch_size < 1 or window_batches < 1 or max_length < 1:
            raise ValueError("batch_size, window_batches and max_length must be positive")
        super().__init__(source, batch_size=batch_size, window=window_batches * batch_size, rank=rank,
                         world_size=world_size)
        self.processor_path = processor_path
        self.max_length = max_length
        self.window_batches = window_batches
        self.seed = seed
        self.shuffle = shuffle
        self.encode = encode
        self.collate = collate
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

    def window_groups(self, items: list[ChatSample], *, epoch: int,
                      window_start: int) -> list[list[EncodedConversation]]:
        """The window's samples encoded and grouped by length, in a seeded batch order."""
        encoded = [self.encode(self.processor, sample, self.max_length) for sample in items]
        groups = group_by_length([len(e) for e in encoded], self.batch_size,
                                 seed=window_seed(self.seed, epoch, window_start), shuffle=self.shuffle)
        return [[encoded[i] for i in group] for group in groups]

    def make_batch(self, group: list[EncodedConversation]) -> Batch:
        processor = self.processor
        return self.collate(group, pad_id=processor.tokenizer.pad_token_id, image_processor=processor.image_processor)


class SFTStream(ConversationStream):
    """The stream with SFT's steps: `encode_sample` and `collate` (`SFTBatch`)."""

    def __init__(self, source: Source[ChatSample], processor_path: str, **options: Any) -> None:
        super().__init__(source, processor_path, **options, encode=encode_sample, collate=collate)
