"""Where a stream is: enough to resume it so that it yields exactly what it would have yielded.

A stream is split into *roles*, one per (rank, worker). A role reads its shards in a fixed
order (`shard_pos` indexes that order), groups tar members into samples numbered within their
shard (`ordinal`), passes them through a shuffle buffer, and yields them. Its position after a
sample is therefore: the next sample to read (`cursor`), the locations of the samples waiting
in the buffer in buffer order, and how many picks and yields it has made (the buffer's random
draws are a pure function of the pick count, see `eva_data.shards.stream`).

Restoring re-reads only the buffered samples and resumes reading at the cursor; it never
replays the stream from the start. Everything is plain integers, so a position is a few hundred
bytes of JSON for a buffer of a few dozen samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Location = tuple[int, int]
"""(shard_pos, ordinal): a sample's place in a role's reading order."""


@dataclass(frozen=True)
class StreamPosition:
    """One role's position in one epoch.

    Attributes:
        epoch: the epoch the position belongs to.
        rank, world_size: the role's rank among the ranks.
        role, num_workers: the role's index among the workers of its rank.
        cursor: (shard_pos, ordinal) of the next sample to read.
        buffer: locations of the samples in the shuffle buffer, in buffer order.
        picks: samples taken from the buffer so far (yielded or skipped by the transform).
        yielded: samples yielded so far.
        skipped_samples: samples skipped as corrupt so far (bad members, bad JSON, undecodable video).
        skipped_shards: shards whose reading failed so far (unreadable, truncated).
    """

    epoch: int
    rank: int
    world_size: int
    role: int
    num_workers: int
    cursor: Location = (0, 0)
    buffer: tuple[Location, ...] = field(default_factory=tuple)
    picks: int = 0
    yielded: int = 0
    skipped_samples: int = 0
    skipped_shards: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cursor"] = list(self.cursor)
        data["buffer"] = [list(loc) for loc in self.buffer]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamPosition:
        return cls(**{**data, "cursor": tuple(data["cursor"]),
                      "buffer": tuple(tuple(loc) for loc in data["buffer"])})


class StreamResumeError(RuntimeError):
    """A saved position that does not fit the stream it is loaded into (other shards, another
    split) or whose buffered samples can no longer be read."""
