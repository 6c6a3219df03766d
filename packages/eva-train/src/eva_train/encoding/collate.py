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

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eva_train.encoding.masking import EncodedConversation, pixel_values_for


@dataclass
class Batch:
    """A right-padded batch: the fields every stage's forward needs.

    Stages extend it with per-row fields (`SFTBatch`, `KTOBatch`; later the rollout batch).

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
        sample_ids: the B rows' sample ids (for logs and precomputed reference log-probs).
        prompt_lengths: per row, the tokens before its first assistant turn (KTO's pairs swap them);
            empty: before each row's first trained token.
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
    sample_ids: tuple[str, ...] = ()
    prompt_lengths: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device) -> Batch:
        """The same batch (same class, every field) with every tensor field on `device`."""
        moved = {f.name: value.to(device, non_blocking=True) for f in dataclasses.fields(self)
                 if isinstance(value := getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **moved)

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword arguments of a Qwen2.5-VL forward (no labels: the loss is computed outside)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                  "mm_token_type_ids": self.mm_token_type_ids}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs


@dataclass
class SFTBatch(Batch):
    """A batch of trajectories to imitate: the common fields only."""


@dataclass(kw_only=True)
class KTOBatch(Batch):
    """A batch of labelled trajectories for KTO (`eva_train.stages.kto`).

    Attributes:
        desirable: [B] bool, the label of each row (`ChatSample.meta["desirable"]`).
    """

    desirable: Tensor

    def __post_init__(self) -> None:
        if self.desirable.dtype != torch.bool or self.desirable.shape != (self.rows,):
            raise ValueError(f"desirable must be bool [{self.rows}], got {self.desirable.dtype} "
                             f"{tuple(self.desirable.shape)}")


def _padded_fields(samples: Sequence[EncodedConversation], *, pad_id: int, image_processor=None) -> dict[str, Any]:
    """The common `Batch` fields of right-padded encoded conversations."""
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
    return dict(
        input_ids=input_ids,
        attention_mask=attention,
        trained=trained,
        mm_token_type_ids=types,
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids) if grids else None,
        num_tokens=sum(lengths),
        padding_fraction=padding_fraction(lengths),
        truncated=sum(s.truncated for s in samples),
        sample_ids=tuple(s.sample_id for s in samples),
        prompt_lengths=() if any(s.prompt_length is None for s in samples) else
        tuple(s.prompt_length for s in samples),
    )


def collate(samples: Sequence[EncodedConversation], *, pad_id: int, image_processor=None) -> SFTBatch:
    """Right-pad encoded conversations into one `SFTBatch`.

    Args:
        samples: at least one encoded conversation.
        pad_id: the tokenizer's padding id.
        image_processor: computes the pixel values of samples encoded without them
            (`encode_conversation(..., with_pixels=False)`), for the whole batch at once.
    """
    return SFTBatch(**_padded_fields(samples, pad_id=pad_id, image_processor=image_processor))


def collate_kto(samples: Sequence[EncodedConversation], *, pad_id: int, image_processor=None) -> KTOBatch:
    """Right-pad labelled conversations into one `KTOBatch`; the label is `meta["desirable"]`.

    Raises:
        ValueError: a sample without a boolean `desirable` label.
    """
    labels = []
    for s in samples:
        label = s.meta.get("desirable")
        if not isinstance(label, bool):
            raise ValueError(f"sample {s.sample_id!r} has no boolean meta['desirable'] label (got {label!r}): "
                             "KTO trains on labelled trajectories (eva-data records of kind 'kto')")
        labels.append(label)
    return KTOBatch(**_padded_fields(samples, pad_id=pad_id, image_processor=image_processor),
                    desirable=torch.tensor(labels, dtype=torch.bool))


def append_row(batch: Batch, row: EncodedConversation) -> Batch:
    """The model inputs of `batch` with `row` as one more, last row (a plain `Batch`).

    Every row is right-padded to the longer length (id 0 under attention mask 0) and the row's
    images follow the batch's, so the batch's own rows read what they read before: a forward of
    the result gives them the outputs of a forward of `batch` alone. For the blank-image row a
    sharded model runs beside a batch without an image (`eva_train.objectives.logprobs.policy_logprobs`).

    Args:
        batch: a collated batch (on any device).
        row: an encoded conversation with its pixel values (`with_pixels=True`) if it has images.

    Returns:
        A `Batch` of `batch.rows + 1` rows on the batch's device.
    """
    if row.image_grid_thw is not None and row.pixel_values is None:
        raise ValueError("the appended row needs its pixel values: encode it with_pixels=True")
    extra = _padded_fields([row], pad_id=0)
    longest = max(batch.input_ids.shape[1], len(row))
    device = batch.input_ids.device

    def stacked(name: str) -> Tensor:
        old = getattr(batch, name)
        new = extra[name].to(device, old.dtype)
        out = old.new_zeros((old.shape[0] + 1, longest))
        out[:-1, :old.shape[1]] = old
        out[-1, :new.shape[1]] = new[0]
        return out

    def images(name: str) -> Tensor | None:
        parts = [t.to(device) for t in (getattr(batch, name), extra[name]) if t is not None]
        return torch.cat([p.to(parts[0].dtype) for p in parts]) if parts else None

    lengths = [*batch.attention_mask.sum(dim=1).tolist(), len(row)]
    return Batch(input_ids=stacked("input_ids"), attention_mask=stacked("attention_mask"), trained=stacked("trained"),
                 mm_token_type_ids=stacked("mm_token_type_ids"), pixel_values=images("pixel_values"),
                 image_grid_thw=images("image_grid_thw"), num_tokens=batch.num_tokens + len(row),
                 padding_fraction=padding_fraction(lengths), truncated=batch.truncated + row.truncated,
                 sample_ids=(*batch.sample_ids, row.sample_id) if batch.sample_ids else ())


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
