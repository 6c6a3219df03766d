"""A stream of shard samples for one rank: split by rank and worker, shuffled, resumable.

How an epoch is cut (e = epoch, r = rank of R, w = worker role of W, S = the shard list):
- Exact epochs (`resample=False`): S is shuffled with a seed of (seed, e), the same on every
  rank; rank r takes every R-th shard from r, and worker w every W-th of those from w. Every
  sample is read once per epoch, but ranks get different sample counts when shards are uneven.
- Resampled epochs (`resample=True`): each role draws shards from S with replacement forever,
  from a seed of (seed, e, r, w), and stops after a fixed number of samples: `samples_per_rank`
  split over the W workers (the first `n % W` take one more). Every rank yields the same number
  of samples, so no rank waits at a collective for one that ran out (WebDataset's
  `ResampledShards` + `with_epoch`, with the length made explicit).

Within a role, samples pass through a shuffle buffer of `buffer_size`: fill it, take the
element at a random index, refill. The random index of pick k is a hash of (seed, e, r, w, k),
not the state of a generator, so a `StreamPosition` of plain integers restores the stream
exactly: the resumed stream yields the same remaining sequence as one never stopped.

Corrupt data never stops a stream: a sample with missing members or bad JSON, a video that
does not open (`validate_video`), a transform that raises a `FrameToolError` or `SampleError`,
and a shard that does not read to its end, are each skipped with a logged warning and counted
in the position (`skipped_samples`, `skipped_shards`): in the next sample's, and when the epoch
ends in `last_position`, so skips after the last sample are neither lost nor read again.

Ranks and world size are arguments (no torch.distributed needed); the worker role comes from
`torch.utils.data.get_worker_info()` inside a DataLoader, or from `worker`/`num_workers`
arguments, which is how tests play 2 ranks x 2 workers in one process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from eva_core.decoders import Backend
from eva_core.errors import FrameToolError
from eva_core.reader import VideoReader
from webdataset.shardlists import expand_urls

from eva_data.shards.position import Location, StreamPosition, StreamResumeError
from eva_data.shards.sample import SampleError, ShardSample
from eva_data.shards.tario import read_shard
from eva_data.shards.validate import CHECKS, VideoCheck, check_video
from eva_data.shards.writer import INDEX, read_index

log = logging.getLogger(__name__)

Transform = Callable[[ShardSample], ShardSample]


class ShardStreamError(RuntimeError):
    """A stream that cannot make progress (every shard it draws fails)."""


def list_shards(shards: str | os.PathLike | Sequence[str]) -> list[str]:
    """Shard URLs from a folder (its index.json, else its *.tar sorted), a brace pattern such
    as "data/shard-{000000..000009}.tar", or a list.

    Raises:
        FileNotFoundError: a folder with no shards, or a local shard file that does not exist
            (a missing file at start-up is a wrong path, not corrupt data to skip).
    """
    if isinstance(shards, (str, os.PathLike)) and Path(shards).is_dir():
        root = Path(shards)
        if (root / INDEX).is_file():
            return [s.url for s in read_index(root)]
        found = sorted(str(p) for p in root.glob("*.tar"))
        if not found:
            raise FileNotFoundError(f"no .tar shards in {root}")
        return found
    urls = list(expand_urls(str(shards))) if isinstance(shards, (str, os.PathLike)) else [str(s) for s in shards]
    missing = [u for u in urls if not _is_remote(u) and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard files do not exist, such as {missing[0]}")
    return urls


def _is_remote(url: str) -> bool:
    """A URL WebDataset's gopen opens other than as a local file (pipe:, http://, s3://, ...)."""
    return url.startswith("pipe:") or "://" in url


def draw(*parts: object) -> int:
    """A uniform 64-bit integer from a hash of `parts`: the stream's only source of randomness."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def epoch_order(urls: Sequence[str], seed: int, epoch: int, shuffle: bool) -> list[str]:
    """The shard order of an exact epoch, the same on every rank."""
    order = list(urls)
    if shuffle:
        random.Random(f"{seed}-{epoch}").shuffle(order)
    return order


def split_quota(total: int, parts: int, part: int) -> int:
    """Part `part` of `total` split over `parts`: total // parts, plus one for the first total % parts."""
    return total // parts + (1 if part < total % parts else 0)


class ShardStream(torch.utils.data.IterableDataset):
    """One epoch of samples for one rank per iteration; `set_epoch` moves to the next.

    Args:
        shards: folder, brace pattern or list of shard URLs.
        rank, world_size: this process's rank and the number of ranks.
        seed: seeds the shard order, the resampling and the shuffle buffer.
        shuffle_shards: shuffle the shard order each exact epoch.
        buffer_size: shuffle buffer in samples (0 or 1: no shuffling). It holds raw samples,
            video bytes included, so memory grows with it: size it in videos, not thousands.
        resample: draw shards with replacement and stop after `samples_per_rank`.
        samples_per_rank: epoch length per rank when resampling; default: the index's total
            samples divided by world_size, rounded up.
        transform: applied to each sample after the shuffle (decoding, for instance).
        validate_video: open each video (eva-core's reader, from bytes) and decode its first
            frame (True, "first_frame") or every frame ("all_frames"), skipping and counting
            those that fail (`eva_data.shards.validate`); False: no check.
        video_backend: the decoder validation opens videos with ("auto": torchcodec, else PyAV;
            `eva_core.decoders`).
        worker, num_workers: play this worker role outside a DataLoader (tests, simple loops).
        max_failures: consecutive failed shards or samples after which a resampling stream gives up.
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str], *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle_shards: bool = True, buffer_size: int = 0, resample: bool = False,
                 samples_per_rank: int | None = None, transform: Transform | None = None,
                 validate_video: VideoCheck = True, video_backend: Backend = "auto", worker: int | None = None, num_workers: int | None = None,
                 max_failures: int = 1000):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if (worker is None) != (num_workers is None) or (worker is not None and not 0 <= worker < num_workers):
            raise ValueError(f"give both worker and num_workers with 0 <= worker < num_workers, got {worker}, {num_workers}")
        self.urls = list_shards(shards)
        if not self.urls:
            raise ValueError(f"no shards in {shards!r}")
        if validate_video not in CHECKS:
            raise ValueError(f"validate_video must be one of {CHECKS}, got {validate_video!r}")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_shards, self.buffer_size, self.resample = shuffle_shards, buffer_size, resample
        self.transform, self.validate_video, self.max_failures = transform, validate_video, max_failures
        self.video_backend = video_backend
        self.worker, self.num_workers = worker, num_workers
        if resample and samples_per_rank is None:
            samples_per_rank = self._index_total(shards)
        if resample and (samples_per_rank is None or samples_per_rank < 0):
            raise ValueError("resampling needs samples_per_rank (or a shard folder with index.json)")
        self.samples_per_rank = samples_per_rank
        self.epoch = 0
        self.role_offset = 0  # set by ShardLoader so a resumed DataLoader continues the worker rotation
        self.resume: dict[int, StreamPosition] = {}
        self.last_position: StreamPosition | None = None

    def _index_total(self, shards) -> int | None:
        if isinstance(shards, (str, os.PathLike)) and (Path(shards) / INDEX).is_file():
            total = sum(s.count for s in read_index(shards))
            return -(-total // self.world_size)
        return None

    # --- epoch and state ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch`; positions saved for other epochs are dropped."""
        self.epoch = epoch
        self.resume = {r: p for r, p in self.resume.items() if p.epoch == epoch}

    def state_dict(self) -> dict:
        """The position of an in-process iteration (one role): resume with `load_state_dict`."""
        positions = {} if self.last_position is None else {str(self.last_position.role): self.last_position.to_dict()}
        return {"epoch": self.epoch, "positions": positions}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()` (or `ShardLoader.state_dict()`): the next iteration of
        each saved role continues where it stopped."""
        self.epoch = int(state["epoch"])
        self.resume = {int(role): StreamPosition.from_dict(p) for role, p in state["positions"].items()}
        for position in self.resume.values():
            if (position.rank, position.world_size) != (self.rank, self.world_size):
                raise StreamResumeError(f"position of rank {position.rank}/{position.world_size} loaded into "
                                        f"rank {self.rank}/{self.world_size}")

    # --- the role ----------------------------------------------------------------------------

    def _role(self) -> tuple[int, int]:
        if self.worker is not None:
            return self.worker, self.num_workers
        info = torch.utils.data.get_worker_info()
        if info is None:
            return 0, 1
        return (info.id + self.role_offset) % info.num_workers, info.num_workers

    def _role_shards(self, role: int, num_workers: int) -> Callable[[int], str | None]:
        """shard_pos -> URL of this role's reading order (None past the end)."""
        if self.resample:
            n = len(self.urls)
            return lambda pos: self.urls[draw("shard", self.seed, self.epoch, self.rank, role, pos) % n]
        order = epoch_order(self.urls, self.seed, self.epoch, self.shuffle_shards)
        mine = order[self.rank::self.world_size][role::num_workers]
        return lambda pos: mine[pos] if pos < len(mine) else None

    def __iter__(self) -> Iterator[ShardSample]:
        role, num_workers = self._role()
        start = self.resume.pop(role, None)
        if start is not None and (start.epoch != self.epoch or start.num_workers != num_workers):
            raise StreamResumeError(f"saved position is for epoch {start.epoch} with {start.num_workers} workers, "
                                    f"stream is at epoch {self.epoch} with {num_workers}")
        yield from _RoleIterator(self, role, num_workers, start)


class _RoleIterator:
    """One role's epoch: reading, shuffling, transforming, and keeping its position."""

    def __init__(self, stream: ShardStream, role: int, num_workers: int, start: StreamPosition | None):
        self.s = stream
        self.role, self.num_workers = role, num_workers
        self.shard_at = stream._role_shards(role, num_workers)
        self.quota = split_quota(stream.samples_per_rank, num_workers, role) if stream.resample else None
        self.pos = start or StreamPosition(epoch=stream.epoch, rank=stream.rank, world_size=stream.world_size,
                                           role=role, num_workers=num_workers)
        self.cursor: Location = self.pos.cursor
        self.skipped_samples, self.skipped_shards = self.pos.skipped_samples, self.pos.skipped_shards
        self.failures = 0

    def _shard_failed(self, url: str, error: BaseException) -> None:
        self.skipped_shards += 1
        log.warning("shard %s: reading stopped (%s: %s); skipped the rest of it", url, type(error).__name__, error)

    def _sample_failed(self, where: str, error: BaseException) -> None:
        self.skipped_samples += 1
        self.failures += 1
        log.warning("skipped corrupt sample %s (%s: %s)", where, type(error).__name__, error)
        if self.s.resample and self.failures > self.s.max_failures:
            raise ShardStreamError(f"{self.failures} samples or shards in a row failed; last: {where}: {error}")

    def _source(self) -> Iterator[tuple[Location, ShardSample]]:
        """Parsed samples from the cursor on.

        Reads one sample ahead within a shard, so that the cursor moves past a shard together
        with its last sample; a read failure is counted at that moment too. A saved position
        then either points into a shard whose failure is not yet counted (and a resumed stream
        meets and counts it) or past it, never both: nothing is counted twice.
        """
        pos, ordinal = self.cursor
        while (url := self.shard_at(pos)) is not None:
            errors: list[BaseException] = []
            groups = read_shard(url, skip=ordinal, on_error=lambda _url, error, sink=errors: sink.append(error))
            current = next(groups, None)
            got_any = current is not None
            while current is not None:
                following = next(groups, None)
                number, group = current
                if following is None:
                    self.cursor = (pos + 1, 0)
                    if errors:
                        self._shard_failed(url, errors.pop())
                else:
                    self.cursor = (pos, number + 1)
                try:
                    sample = ShardSample.from_tar(group)
                except SampleError as error:
                    self._sample_failed(f"{url}#{number}", error)
                else:
                    yield (pos, number), sample
                current = following
            if errors:  # a shard that failed before giving any sample
                self._shard_failed(url, errors.pop())
            if not got_any:
                self.failures += 1
                if self.s.resample and self.failures > self.s.max_failures:
                    raise ShardStreamError(f"{self.failures} shards in a row gave no sample; last: {url}")
            pos, ordinal = pos + 1, 0
            self.cursor = (pos, 0)

    def _refill(self) -> list[tuple[Location, ShardSample]]:
        """The saved buffer's samples, re-read from their shards, in buffer order."""
        wanted: dict[int, set[int]] = {}
        for shard_pos, ordinal in self.pos.buffer:
            wanted.setdefault(shard_pos, set()).add(ordinal)
        found: dict[Location, ShardSample] = {}
        for shard_pos, ordinals in wanted.items():
            url = self.shard_at(shard_pos)
            for number, group in read_shard(url, skip=min(ordinals)):
                if number in ordinals:
                    found[(shard_pos, number)] = ShardSample.from_tar(group)
                if number >= max(ordinals):
                    break
        missing = [loc for loc in self.pos.buffer if loc not in found]
        if missing:
            raise StreamResumeError(f"buffered samples {missing[:5]} can no longer be read; did the shards change?")
        return [(loc, found[loc]) for loc in self.pos.buffer]

    def _prepare(self, sample: ShardSample) -> ShardSample:
        try:
            if self.s.validate_video:
                sample.reader = VideoReader(sample.video, backend=self.s.video_backend)
                sample.info = sample.reader.info
                check_video(sample.reader, self.s.validate_video)
            return self.s.transform(sample) if self.s.transform is not None else sample
        finally:
            sample.reader = None  # not picklable across DataLoader workers, and holds decoders

    def _position(self, buffer: list[tuple[Location, ShardSample]], picks: int, yielded: int) -> StreamPosition:
        """The position with `buffer` held: what was read and counted so far, skips included."""
        return replace(self.pos, cursor=self.cursor, buffer=tuple(loc for loc, _ in buffer), picks=picks,
                       yielded=yielded, skipped_samples=self.skipped_samples, skipped_shards=self.skipped_shards)

    def __iter__(self) -> Iterator[ShardSample]:
        buffer = self._refill() if self.pos.buffer else []
        source = self._source()
        picks, yielded = self.pos.picks, self.pos.yielded
        size = max(1, self.s.buffer_size)
        while self.quota is None or yielded < self.quota:
            while len(buffer) < size and (item := next(source, None)) is not None:
                buffer.append(item)
            if not buffer:
                # Skips after the last sample yielded count too: a resume from `last_position`
                # neither reads nor counts them again.
                self.s.last_position = self._position(buffer, picks, yielded)
                return
            j = draw("pick", self.s.seed, self.s.epoch, self.s.rank, self.role, picks) % len(buffer) if size > 1 else 0
            (location, sample) = buffer[j]
            buffer[j] = buffer[-1]
            buffer.pop()
            picks += 1
            try:
                sample = self._prepare(sample)
            except (FrameToolError, SampleError) as error:
                self._sample_failed(f"{sample.url}#{location[1]} ({sample.key})", error)
                continue
            self.failures = 0
            yielded += 1
            sample.position = self._position(buffer, picks, yielded)
            self.s.last_position = sample.position
            yield sample
