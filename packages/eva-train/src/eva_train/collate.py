"""Batching encoded conversations: length grouping, right padding, and the padding they cost.

Trajectories differ in length by an order of magnitude (one survey call versus a survey and
two zooms), so random batches waste most of their tokens on padding. `group_by_length` sorts
a window of samples by length and cuts it into batches (the "length grouping" of Hugging
Face's `group_by_length`, applied per window so it works on a stream), then shuffles the
order of the batches with a seeded generator so long and short batches alternate. Each batch
states its padding fraction, which the trainer logs.

Packing (several conversations in one row) is not used: Qwen2.5-VL's M-RoPE positions are
computed per row from the image grids, and packing would need per-segment position resets and
a variable-length attention kernel; length grouping gets padding to a few percent without it
(see the tests and docs/benchmarks.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from eva_train.masking import EncodedConversation, pixel_values_for


@dataclass
class Batch:
    """A right-padded batch.

    Attributes:
        input_ids: [B, L] long, padded with the tokenizer's pad id.
        attention_mask: [B, L] long, 1 on real tokens.
        trained: [B, L] bool, the loss mask (targets).
        mm_token_type_ids: [B, L] int, 1 on image tokens.
        pixel_values: [P, D] float, the images of all rows in row order, or None.
        image_grid_thw: [I, 3] long, or None.
        num_tokens: real (non-padding) tokens.
        padding_fraction: padding tokens / (B * L).
        truncated: rows that were truncated to the length limit.
    """

    input_ids: Tensor
    attention_mask: Tensor
    trained: Tensor
    mm_token_type_ids: Tensor
    pixel_values: Tensor | None
    image_grid_thw: Tensor | None
    num_tokens: int
    padding_fraction: float
    truncated: int = 0

    def to(self, device) -> Batch:
        """The batch with every tensor on `device`."""
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.input_ids), move(self.attention_mask), move(self.trained),
                     move(self.mm_token_type_ids), move(self.pixel_values), move(self.image_grid_thw),
                     self.num_tokens, self.padding_fraction, self.truncated)

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword arguments of a Qwen2.5-VL forward (no labels: the loss is computed outside)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                  "mm_token_type_ids": self.mm_token_type_ids}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs


def collate(samples: Sequence[EncodedConversation], *, pad_id: int, image_processor=None) -> Batch:
    """Right-pad encoded conversations into one `Batch`.

    Args:
        samples: at least one encoded conversation.
        pad_id: the tokenizer's padding id.
        image_processor: computes the pixel values of samples encoded without them
            (`encode_conversation(..., with_pixels=False)`), for the whole batch at once.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(s) for s in samples]
    b, longest = len(samples), max(lengths)
    input_ids = torch.full((b, longest), pad_id, dtype=torch.long)
    attention = torch.zeros((b, longest), dtype=torch.long)
    trained = torch.zeros((b, longest), dtype=torch.bool)
    types = torch.zeros((b, longest), dtype=torch.int32)
    for i, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        input_ids[i, :n] = s.input_ids
        attention[i, :n] = 1
        trained[i, :n] = s.trained
        types[i, :n] = s.mm_token_type_ids
    pixels, grids = [], []
    for s in samples:
        if s.image_grid_thw is None:
            continue
        if s.pixel_values is None:
            if image_processor is None:
                raise ValueError("a sample was encoded without pixel values: pass the image processor")
            values, grid = pixel_values_for(image_processor, s.images, s.image_grid_thw)
        else:
            values, grid = s.pixel_values, s.image_grid_thw
        pixels.append(values)
        grids.append(grid)
    total = sum(lengths)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        trained=trained,
        mm_token_type_ids=types,
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids) if grids else None,
        num_tokens=total,
        padding_fraction=padding_fraction(lengths),
        truncated=sum(s.truncated for s in samples),
    )


def padding_fraction(lengths: Sequence[int]) -> float:
    """Padding share of a right-padded batch: 1 - sum(lengths) / (B * max(lengths))."""
    if not lengths:
        raise ValueError("no lengths")
    return 1.0 - sum(lengths) / (len(lengths) * max(lengths))


def group_by_length(lengths: Sequence[int], batch_size: int, *, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Cut a window of samples into batches of similar length.

    Indices are sorted by length (longest first, ties by index), cut into consecutive batches
    of `batch_size` (the last one may be shorter), and the batch order is shuffled with
    `random.Random(seed)` when `shuffle` is set.

    Args:
        lengths: token length of each sample of the window.
        batch_size: samples per batch.
        seed: seeds the batch-order shuffle (same seed, same batches in the same order).
        shuffle: shuffle the order of the batches.

    Returns:
        Lists of indices into `lengths`, every index exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches
