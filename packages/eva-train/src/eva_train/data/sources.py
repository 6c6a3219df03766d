"""What training reads: the records (`ChatSample`, `RlItem`), the `Source` protocol that serves them
per rank, and `ListSource`, a source over an in-memory list.

A source serves, for one epoch and one data-parallel rank, a deterministic sequence of items
(conversations for SFT and KTO, prompts with their videos for GRPO), each with the source's
state after it (plain JSON-able data), and can continue from any such state. Those two
properties are what makes a resumed job see exactly the items an uninterrupted one would: the
loader (`eva_train.data.loaders`) stores the state in the checkpoint and asks the source to
continue from it.

Every rank must get the same number of items per epoch (ranks that run out early would hang
in the next collective), so `num_examples` is per rank and equal across ranks.

`ListSource` serves an in-memory list (tests, benchmarks, small jobs, a benchmark folder's
prompts): a seeded permutation per epoch, then rank r takes positions r, r + W, ... of it, cut
to the same count on every rank (up to W - 1 items of an epoch are skipped; the next epoch's
permutation differs).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from eva_core.video import VideoSource
from eva_data.records.records import RlPrompt

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass
class ChatSample:
    """One training conversation.

    Attributes:
        messages: turns in the Hugging Face chat format (`eva_core.policy`); image parts hold
            uint8 [3, H, W] tensors at the size the model sees.
        trained_turns: one flag per turn, True for the assistant turns that carry loss; None
            trains every assistant turn.
        sample_id: a stable id, for logs.
        meta: labels and provenance, carried to the batch.
        trained_from: (turn, char): the first trained turn is trained from its character
            `char` on (a KTO undesirable's credit); None: trained turns whole.
    """

    messages: list[dict[str, Any]]
    trained_turns: list[bool] | None = None
    sample_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    trained_from: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a ChatSample needs at least one turn")
        if self.trained_turns is not None and len(self.trained_turns) != len(self.messages):
            raise ValueError(f"{len(self.trained_turns)} trained flags for {len(self.messages)} turns")


@dataclass(frozen=True)
class RlItem:
    """One prompt and its video: a file path (folder source) or the encoded video's bytes (shards)."""

    prompt: RlPrompt
    video: VideoSource


@runtime_checkable
class Source(Protocol[T_co]):
    """A deterministic, restartable per-rank sequence of items (`ChatSample`s, `RlItem`s)."""

    def num_examples(self, *, rank: int, world_size: int) -> int:
        """Items each rank reads per epoch (equal on every rank)."""
        ...

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[T_co, dict[str, Any]]]:
        """This rank's items of `epoch`, each with the source state right after it.

        Args:
            state: a state yielded earlier for the same epoch and rank: continue after that
                item. None starts the epoch.
        """
        ...


def rank_slice(order: Sequence[int], *, rank: int, world_size: int) -> list[int]:
    """Positions r, r + W, r + 2W, ... of `order`, cut to len(order) // W entries."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    per_rank = len(order) // world_size
    return list(order[rank::world_size][:per_rank])


class ListSource(Generic[T]):
    """An in-memory list of items, or of zero-argument callables that build one (decoded lazily).

    Args:
        items: the items; an item that is callable is called when read (to decode images only then).
        seed: seeds the per-epoch permutation (epoch e: seed * 1_000_003 + e).
        shuffle: permute each epoch; False keeps the list order.
    """

    def __init__(self, items: Sequence[T | Callable[[], T]], *, seed: int = 0, shuffle: bool = True) -> None:
        if not items:
            raise ValueError("ListSource needs at least one item")
        self.items = list(items)
        self.seed = seed
        self.shuffle = shuffle

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def num_examples(self, *, rank: int, world_size: int) -> int:
        count = len(self.items) // world_size
        if count == 0:
            raise ValueError(f"{len(self.items)} items cannot feed {world_size} ranks")
        return count

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[T, dict[str, Any]]]:
        order = rank_slice(self._order(epoch), rank=rank, world_size=world_size)
        start = 0 if state is None else int(state["next"])
        for position in range(start, len(order)):
            item = self.items[order[position]]
            yield (item() if callable(item) else item), {"next": position + 1}
