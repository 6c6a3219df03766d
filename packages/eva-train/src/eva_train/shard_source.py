"""Training conversations streamed from eva-data shards: the `ExampleSource` the recipes use.

Each shard sample (`eva_data.shards.sample.ShardSample`) is one video with its training
records; every record of the source's `kind` ("sft" by default, or "kto": labelled
trajectories) becomes one `ChatSample` through eva-data's own conversion
(`eva_data.records.convert.training_conversation`: the recorded turns, frames decoded again
from the sample's video bytes at the recorded times, assistant turns trained; a KTO record's
label is `meta["desirable"]`). Frames are never
stored in shards; decoding happens here, in the data worker.

The stream is eva-data's `ShardStream` (shard order per epoch, optional shuffle buffer, rank
split, resampling), played as a single worker role: eva-train's `SFTStream` runs in at most
one DataLoader worker. Positions: the state after a conversation is eva-data's stream position
after its video plus how many of that video's records of the kind were already used, so a resumed job
re-reads at most that one video.

Epoch length, in conversations per rank, must be the same on every rank and known up front
(`eva_train.stream`):
- `resample=False` (exact epochs, one process only): every record of the kind once per epoch; the
  count is read from the shards' `.trajectories.json` members (local shards; a header scan
  that seeks past the videos).
- `resample=True` (any number of ranks): each rank draws shards with replacement from a seed
  of (seed, epoch, rank) and takes `examples_per_rank` conversations (default: the record
  count divided by the world size, rounded up), WebDataset's resampled-epoch recipe.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eva_train.sources import ChatSample

if TYPE_CHECKING:
    from eva_data.shards.sample import ShardSample

SFT_KIND = "sft"
KINDS = ("sft", "kto")  # trajectory records; "rl" prompts are not conversations
TRAJECTORIES_MEMBER = ".trajectories.json"


class ShardSourceError(ValueError):
    """Shards that cannot serve the requested epochs."""


def _wanted(record: dict[str, Any], kind: str, views: Sequence[str] | None) -> bool:
    from eva_data.records.counterpart import view_matches

    return record.get("kind", SFT_KIND) == kind and (views is None or view_matches(record, views))


def _shard_records(urls: Sequence[str], kind: str, views: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            raise ShardSourceError(f"cannot count records in remote shard {url}: give examples_per_rank")
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(TRAJECTORIES_MEMBER):
                    records = json.loads(tar.extractfile(member).read())
                    yield from (r for r in records if _wanted(r, kind, views))


def count_records(urls: Sequence[str], kind: str = SFT_KIND, views: Sequence[str] | None = None) -> int:
    """Records of `kind` (and of one of `views`, when given) in local tar shards, reading only the
    `.trajectories.json` members."""
    return sum(1 for _ in _shard_records(urls, kind, views))


def count_labels(urls: Sequence[str]) -> tuple[int, int]:
    """(desirable, undesirable) KTO records in local tar shards (`.trajectories.json` members only)."""
    labels = [bool(r["desirable"]) for r in _shard_records(urls, "kto")]
    return sum(labels), len(labels) - sum(labels)


class ShardRecords:
    """The records of one kind in eva-data shards, streamed for one rank with a resumable state.

    What `ShardSource` (training conversations) and `eva_train.rl_shards.RlShardSource` (RL
    prompts) share: the epoch length per rank (module doc) and the walk over each video's records
    with the state after every record.

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

    def records(self, *, epoch: int, rank: int, world_size: int, state: dict[str, Any] | None = None
                ) -> Iterator[tuple[ShardSample, dict[str, Any], dict[str, Any]]]:
        """(sample, record, state after it) for this rank's records of `kind` in `epoch`, from `state` on.

        A state is eva-data's stream position before a video plus how many of its records were
        already used (after a video's last record: the position after that video)."""
        stream = self._stream(epoch, rank, world_size)
        before = None if state is None else state["stream"]
        skip = 0 if state is None else int(state["skip"])
        if before is not None:
            stream.load_state_dict(before)
        for sample in stream:
            records = [r for r in sample.trajectories if _wanted(r, self.kind, self.views)]
            after = {"epoch": epoch, "positions": {"0": sample.position.to_dict()}}
            for j in range(skip, len(records)):
                last = j + 1 == len(records)
                yield sample, records[j], ({"stream": after, "skip": 0} if last else {"stream": before, "skip": j + 1})
            before, skip = after, 0


class ShardSource(ShardRecords):
    """The trajectory records of one kind in eva-data shards, as conversations.

    Args:
        shards, seed, buffer_size, resample, examples_per_rank: as `ShardRecords`.
        synthesize: as `ShardRecords`.
        kind: which records to serve: "sft" or "kto".
        views: serve only records seen through one of these views (`eva_data.records.counterpart.
            record_view`): "agent" (oracle or teacher trajectories), "uniform" (uniform
            counterparts of any frame count) or "uniform-N" (of N frames); None serves all. One
            shard folder then trains the agent and the uniform baselines on the same items.
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

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[ChatSample, dict[str, Any]]]:
        from eva_data.records.convert import training_conversation
        from eva_data.records.records import record_from_dict

        for sample, record, after in self.records(epoch=epoch, rank=rank, world_size=world_size, state=state):
            conversation = training_conversation(record_from_dict({"kind": SFT_KIND} | record), sample.video)
            yield ChatSample(messages=conversation.messages, trained_turns=conversation.trained_turns,
                             sample_id=conversation.sample_id, meta=conversation.meta), after
