"""RL prompts streamed from eva-data shards: the `RlSource` of GRPO runs at scale.

A shard sample (`eva_data.shards.sample.ShardSample`) is one video; its `.trajectories.json`
member holds the RL prompt records about it (`eva_data.records.records.RlPrompt`, kind "rl"),
as `eva-data build rl` writes them (`eva_data.construct.build.build_rl_set`). Every record
becomes one `RlItem` whose video is the sample's bytes: eva-core's frame tool and agent loop
open bytes directly (`eva_core.video.VideoSource`), so no temporary file is written.

The stream and its resumable state are `eva_train.data.shards.ShardRecords`' (eva-data's
`ShardStream` played as one worker role, in the training process: a GRPO step reads a few videos
and then spends its time on rollouts). Epoch length per rank as there: exact epochs
(`resample=False`) serve every record once and work in one process only; several ranks need
`resample: true`, which gives every rank the same `examples_per_rank` prompts (default: the
record count over the world size, rounded up), so no rank runs out of prompts before another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from eva_data.records.records import RlPrompt

from eva_train.data.shards import ShardRecords
from eva_train.data.sources import RlItem

RL_KIND = "rl"


class RlShardSource(ShardRecords):
    """The RL prompt records of eva-data shards with their videos' bytes.

    Args:
        shards: a shard folder (with eva-data's `index.json`), a brace pattern or a list of URLs.
        seed: seeds shard order, resampling and the shuffle buffer.
        buffer_size: eva-data's shuffle buffer, in videos (0: read order).
        resample: draw shards with replacement (needed with several ranks).
        examples_per_rank: prompts per rank per epoch; default from the record count.
        synthesize: `eva-data synth` arguments to build a missing shard folder first (`ShardRecords`).
    """

    def __init__(self, shards: str | list[str], *, seed: int = 0, buffer_size: int = 0, resample: bool = False,
                 examples_per_rank: int | None = None, synthesize: list[str] | None = None) -> None:
        super().__init__(shards, kind=RL_KIND, seed=seed, buffer_size=buffer_size, resample=resample,
                         examples_per_rank=examples_per_rank, synthesize=synthesize)

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[RlItem, dict[str, Any]]]:
        for sample, record, after in self.records(epoch=epoch, rank=rank, world_size=world_size, state=state):
            yield RlItem(RlPrompt.from_dict(record), sample.video), after
