"""Training records streamed from eva-data shards: the sources of the recipes at scale.

Each shard sample (`eva_data.shards.sample.ShardSample`) is one video; its `.trajectories.json`
member holds the records about it. A source serves the records of one `kind`:
- `ShardSource`, kind "sft" (oracle or teacher trajectories) or "kto" (labelled trajectories):
  each record becomes one `ChatSample` through eva-data's own conversion
  (`eva_data.records.convert.training_conversation`: the recorded turns, frames decoded again
  from the sample's video bytes at the recorded times, assistant turns trained; a KTO record's
  label is `meta["desirable"]`). Frames are never stored in shards; decoding happens here, in
  the data worker.
- `RlShardSource`, kind "rl" (`eva_data.records.records.RlPrompt`, as `eva-data build rl`
  writes them, `eva_data.construct.build.build_rl_set`): each record becomes one `RlItem` whose
  video is the sample's bytes: eva-core's frame tool and agent loop open bytes directly
  (`eva_core.video.VideoSource`), so no temporary file is written.

Both are `ShardRecords`: the stream is eva-data's `ShardStream` (shard order per epoch, optional
shuffle buffer, rank split, resampling), played as a single worker role (a `BatchStream` runs in
at most one DataLoader worker, `eva_train.data.loaders`). Positions: the state after a record is
eva-data's stream position after its video plus how many of that video's records of the kind
were already used, so a resumed job re-reads at most that one video.

Epoch length, in records per rank, must be the same on every rank and known up front
(`eva_train.data.loaders`):
- `resample=False` (exact epochs, one process only): every record of the kind once per epoch; the
  count is read from the shards' `.trajectories.json` members (local shards; a header scan
  that seeks past the videos).
- `resample=True` (any number of ranks): each rank draws shards with replacement from a seed
  of (seed, epoch, rank) and takes `examples_per_rank` records (default: the record count
  divided by the world size, rounded up), WebDataset's resampled-epoch recipe, so no rank runs
  out of records before another.

Corrupt videos cost their records, never the epoch's length: an epoch that ended early would
stop training with "source ended". A video the stream cannot open is skipped by eva-data
(logged with its reason, counted in the stream position's `skipped_samples`); a record whose
frames do not decode (damage past the first frame, which eva-data's check reads) is skipped here
(logged with its reason, counted in the state's `skipped_records`). When an exact epoch's stream
ends short of the promised count, the epoch wraps: the same epoch's stream again from its
start, so its first records fill the gap. The state counts the records served so far, which is
all a resume needs to stop at the same place: the wrapped stream is the same stream. A pass from
the start that serves nothing (every video corrupt) raises `ShardSourceError`. A wrapped pass
reads (and logs and counts) the corrupt videos again: the stream position's counts are those of
its pass; the state's `skipped_videos` and `skipped_records` are those of the epoch so far.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eva_core.errors import FrameToolError
from eva_data.records.records import RlPrompt

from eva_train.data.sources import ChatSample, RlItem

if TYPE_CHECKING:
    from eva_data.shards.sample import ShardSample

log = logging.getLogger(__name__)

T = TypeVar("T")
SFT_KIND = "sft"
RL_KIND = "rl"
KINDS = ("sft", "kto")  # trajectory records, served as conversations by `ShardSource`
TRAJECTORIES_MEMBER = ".trajectories.json"


class ShardSourceError(ValueError):
    """Shards that cannot serve the requested epochs."""


def _served(records: Sequence[dict[str, Any]], kind: str, views: Sequence[str] | None) -> list[tuple[dict[str, Any], str]]:
    """(record, view) for each way one of `records` of `kind` is served (`eva_data.records.
    counterpart.served_views`: an agent trajectory twice when both "agent" and "plan" are asked for)."""
    from eva_data.records.counterpart import served_views

    return [(r, v) for r in records if r.get("kind", SFT_KIND) == kind for v in served_views(r, views)]


def _shard_records(urls: Sequence[str], kind: str, views: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            raise ShardSourceError(f"cannot count records in remote shard {url}: give examples_per_rank")
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(TRAJECTORIES_MEMBER):
                    records = json.loads(tar.extractfile(member).read())
                    yield from (r for r, _ in _served(records, kind, views))


def count_records(urls: Sequence[str], kind: str = SFT_KIND, views: Sequence[str] | None = None) -> int:
    """Records of `kind` (and of one of `views`, when given) in local tar shards, reading only the
    `.trajectories.json` members."""
    return sum(1 for _ in _shard_records(urls, kind, views))


def count_labels(urls: Sequence[str]) -> tuple[int, int]:
    """(desirable, undesirable) KTO records in local tar shards (`.trajectories.json` members only)."""
    labels = [bool(r["desirable"]) for r in _shard_records(urls, "kto")]
    return sum(labels), len(labels) - sum(labels)


class ShardRecords(Generic[T]):
    """The records of one kind in eva-data shards, streamed for one rank with a resumable state.

    What `ShardSource` (training conversations) and `RlShardSource` (RL prompts) share: the epoch
    length per rank (module doc) and the walk over each video's records with the state after
    every record. Subclasses say what a record is served as (`serve`).

    Args:
        shards: a shard folder (with eva-data's `index.json`), a brace pattern or a list of URLs.
        kind: the records' `kind` ("sft", "kto", "rl").
        seed: seeds shard order, resampling and the shuffle buffer.
        buffer_size: eva-data's shuffle buffer, in videos (0: read order).
        resample: draw shards with replacement (needed with several ranks); see the module doc.
        examples_per_rank: records per rank per epoch; default from the record count.
        views: only records seen through one of these views (`ShardSource`); None: all.
        synthesize: when `shards` is a folder that does not exist yet, build it first with
            `eva-data synth` using these arguments (for example `["--n", "12", "--seed", "0",
            "--difficulty", "easy"]`): eva-data's oracle trajectories and RL prompts (and, for
            kind "kto", its rule-labelled trajectories: `eva_data.records.shortcut`).
    """

    def __init__(self, shards: str | list[str], *, kind: str, seed: int = 0, buffer_size: int = 0,
                 resample: bool = False, examples_per_rank: int | None = None,
                 views: list[str] | None = None, synthesize: list[str] | None = None) -> None:
        self.kind = kind
        self.synthesize = synthesize
        self.views = None if views is None else list(views)
        self.shards = shards
        self.seed = seed
        self.buffer_size = buffer_size
        self.resample = resample
        self.examples_per_rank = examples_per_rank

    def prepare(self) -> None:
        """Generate the synthetic shards when asked to and missing (run once, before training)."""
        if self.synthesize is None or not isinstance(self.shards, str | os.PathLike):
            return
        folder = Path(self.shards)
        if folder.is_dir() and any(folder.glob("*.tar")):
            return
        from eva_data.cli import main as eva_data_main

        bench = folder.parent / (folder.name + "-benchmark")
        records = "kto" if self.kind == "kto" else "sft"  # "sft" also writes the RL prompts
        code = eva_data_main(["synth", "--out", str(bench), *self.synthesize, "--records", records,
                              "--shards", str(folder)])
        if code != 0 or not any(folder.glob("*.tar")):
            raise ShardSourceError(f"eva-data synth {' '.join(self.synthesize)} failed (exit {code})")

    @cached_property
    def urls(self) -> list[str]:
        from eva_data.shards.stream import list_shards

        return list_shards(self.shards)

    @cached_property
    def total_records(self) -> int:
        return count_records(self.urls, self.kind, self.views)

    def num_examples(self, *, rank: int, world_size: int) -> int:
        if self.examples_per_rank is not None:
            return self.examples_per_rank
        if not self.resample and world_size > 1:
            raise ShardSourceError("exact epochs give ranks unequal counts: set resample: true with several ranks")
        if self.total_records == 0:
            views = "" if self.views is None else f" of views {self.views}"
            raise ShardSourceError(f"no {self.kind} records{views} in {self.shards}")
        return math.ceil(self.total_records / world_size) if self.resample else self.total_records

    def _stream(self, epoch: int, rank: int, world_size: int):
        from eva_data.shards.stream import ShardStream

        stream = ShardStream(self.urls, rank=rank, world_size=world_size, seed=self.seed,
                             buffer_size=self.buffer_size, resample=self.resample,
                             samples_per_rank=2**62 if self.resample else None,  # the caller counts records
                             worker=0, num_workers=1)
        stream.set_epoch(epoch)
        return stream

    def serve(self, sample: ShardSample, record: dict[str, Any], view: str) -> T:
        """What a record of `sample` is served as, seen through `view` (`_served`).

        Raises:
            FrameToolError: the record's frames do not decode; the record is skipped and counted.
        """
        raise NotImplementedError

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[T, dict[str, Any]]]:
        """(served record, state after it) for this rank's `num_examples` records of `kind` in
        `epoch`, from `state` on (the module doc: skips and the wrap of a short exact epoch).

        A state is eva-data's stream position before a video plus how many of its records were
        already used (after a video's last record: the position after that video), the records
        served so far, and the records and videos skipped so far in the epoch (`skipped_records`,
        `skipped_videos`)."""
        total = self.num_examples(rank=rank, world_size=world_size)
        state = state or {}
        before, skip = state.get("stream"), int(state.get("skip", 0))
        # A state without these counts resumes with them at 0: the stream then serves past the
        # epoch's end, where the consumer's own count (`eva_train.data.loaders`) stops.
        served, skipped = int(state.get("served", 0)), int(state.get("skipped_records", 0))
        earlier = int(state.get("skipped_videos", 0)) - _skipped_samples(before)  # by the passes before this one
        while served < total:
            from_start, served_at_start = before is None, served
            stream = self._stream(epoch, rank, world_size)
            if before is not None:
                stream.load_state_dict(before)
            for sample in stream:
                records = _served(sample.trajectories, self.kind, self.views)
                after = {"epoch": epoch, "positions": {"0": sample.position.to_dict()}}
                for j in range(skip, len(records)):
                    try:
                        item = self.serve(sample, *records[j])
                    except FrameToolError as error:
                        skipped += 1
                        log.warning("skipped record %s of %s (%s): %s", records[j][0].get("id", j), sample.key,
                                    sample.url, error)
                        continue
                    served += 1
                    last = j + 1 == len(records)
                    yield item, {"stream": after if last else before, "skip": 0 if last else j + 1,
                                 "served": served, "skipped_records": skipped,
                                 "skipped_videos": earlier + sample.position.skipped_samples}
                    if served == total:
                        return
                before, skip = after, 0
            if from_start and served == served_at_start:
                raise ShardSourceError(f"no readable {self.kind} records in {self.shards} (epoch {epoch}, rank {rank}): "
                                       "every video was skipped as corrupt")
            log.warning("epoch %d rank %d: the stream ended after %d of %d %s records (corrupt data skipped); "
                        "serving the epoch's first records again", epoch, rank, served, total, self.kind)
            earlier += stream.last_position.skipped_samples  # the pass's end counts skips after its last video
            before, skip = None, 0


def _skipped_samples(stream_state: dict[str, Any] | None) -> int:
    """The videos a `ShardStream` state (of one role) counts as skipped."""
    return 0 if stream_state is None else int(stream_state["positions"]["0"]["skipped_samples"])


class ShardSource(ShardRecords[ChatSample]):
    """The trajectory records of one kind in eva-data shards, as conversations.

    Args:
        shards, seed, buffer_size, resample, examples_per_rank: as `ShardRecords`.
        synthesize: as `ShardRecords`.
        kind: which records to serve: "sft" or "kto".
        views: serve only records seen through one of these views (`eva_data.records.counterpart.
            record_view`): "agent" (oracle or teacher trajectories), "plan" (each agent trajectory
            cut after its first turn: `eva_data.records.convert.first_turn`), "look" (look
            counterparts), "uniform" (uniform counterparts of any frame count) or "uniform-N" (of
            N frames); None serves all. One shard folder then trains the agent and the uniform
            baselines on the same items.
    """

    def __init__(self, shards: str | list[str], *, seed: int = 0, buffer_size: int = 0, resample: bool = False,
                 examples_per_rank: int | None = None, synthesize: list[str] | None = None,
                 kind: str = SFT_KIND, views: list[str] | None = None) -> None:
        if kind not in KINDS:
            raise ShardSourceError(f"kind must be one of {KINDS}, got {kind!r}")
        super().__init__(shards, kind=kind, seed=seed, buffer_size=buffer_size, resample=resample,
                         examples_per_rank=examples_per_rank, views=views, synthesize=synthesize)

    def label_counts(self) -> tuple[int, int]:
        """(desirable, undesirable) records, for kind "kto" (`count_labels`)."""
        if self.kind != "kto":
            raise ShardSourceError(f"a {self.kind!r} source has no labels")
        return count_labels(self.urls)

    def serve(self, sample: ShardSample, record: dict[str, Any], view: str) -> ChatSample:
        """The record's conversation, its frames decoded from the sample's video (the plan view: its first turn)."""
        from eva_data.records.convert import first_turn, training_conversation
        from eva_data.records.counterpart import VIEW_PLAN
        from eva_data.records.records import record_from_dict

        conversation = training_conversation(record_from_dict({"kind": SFT_KIND} | record), sample.video)
        if view == VIEW_PLAN:
            conversation = first_turn(conversation)
        return ChatSample(messages=conversation.messages, trained_turns=conversation.trained_turns,
                          sample_id=conversation.sample_id, meta=conversation.meta,
                          trained_from=conversation.trained_from)


class RlShardSource(ShardRecords[RlItem]):
    """The RL prompt records of eva-data shards with their videos' bytes.

    Args:
        shards, seed, buffer_size, resample, synthesize: as `ShardRecords`.
        examples_per_rank: prompts per rank per epoch; default from the record count.
    """

    def __init__(self, shards: str | list[str], *, seed: int = 0, buffer_size: int = 0, resample: bool = False,
                 examples_per_rank: int | None = None, synthesize: list[str] | None = None) -> None:
        super().__init__(shards, kind=RL_KIND, seed=seed, buffer_size=buffer_size, resample=resample,
                         examples_per_rank=examples_per_rank, synthesize=synthesize)

    def serve(self, sample: ShardSample, record: dict[str, Any], view: str) -> RlItem:
        """The prompt with its video's bytes."""
        return RlItem(RlPrompt.from_dict(record), sample.video)
