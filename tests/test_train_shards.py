"""`ShardSource`: eva-data shards with oracle SFT records as conversations, exact and resampled epochs."""

from __future__ import annotations

import json
from itertools import islice

import pytest
import torch
from eva_train.shard_source import ShardSource, ShardSourceError, count_records

SYNTH = ["--n", "3", "--seed", "2", "--difficulty", "easy", "--duration", "30", "40", "--size", "224", "126",
         "--questions-per-video", "2", "--max-bytes", "40960"]  # the cap puts each video in a shard of its own


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard-source")
    source = ShardSource(str(root / "shards"), synthesize=SYNTH)
    source.prepare()  # generates the benchmark, the oracle records and the shards
    return root


def _records(root):
    lines = (root / "shards-benchmark" / "trajectories.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def test_prepare_synthesizes_once(shards):
    tars = sorted((shards / "shards").glob("*.tar"))
    assert len(tars) == 3
    stamps = [t.stat().st_mtime_ns for t in tars]
    ShardSource(str(shards / "shards"), synthesize=SYNTH).prepare()  # present: nothing rebuilt
    assert [t.stat().st_mtime_ns for t in tars] == stamps


def test_exact_epoch_serves_every_record_once_as_a_conversation(shards):
    source = ShardSource(str(shards / "shards"), seed=0)
    records = _records(shards)
    assert count_records(source.urls) == len(records) == source.num_examples(rank=0, world_size=1) == 6
    served = list(source.examples(epoch=0, rank=0, world_size=1))
    assert sorted(c.sample_id for c, _ in served) == sorted(r["id"] for r in records)
    for chat, _ in served:
        assert chat.meta["source"] == "oracle"  # labelled wherever it is used
        roles = [m["role"] for m in chat.messages]
        assert chat.trained_turns == [r == "assistant" for r in roles]
        images = [p["image"] for m in chat.messages if isinstance(m["content"], list) for p in m["content"]
                  if p["type"] == "image"]
        assert images and all(i.dtype == torch.uint8 and i.shape[0] == 3 for i in images)
    # Another epoch visits the shards in another order.
    assert [c.sample_id for c, _ in source.examples(epoch=1, rank=0, world_size=1)] != [c.sample_id for c, _ in served]


def test_every_state_resumes_with_the_rest(shards):
    source = ShardSource(str(shards / "shards"), seed=0, buffer_size=2)
    served = [(c.sample_id, state) for c, state in source.examples(epoch=3, rank=0, world_size=1)]
    ids = [i for i, _ in served]
    for k, (_, state) in enumerate(served[:-1]):
        rest = [c.sample_id for c, _ in source.examples(epoch=3, rank=0, world_size=1, state=state)]
        assert rest == ids[k + 1:], k
    assert any(state["skip"] for _, state in served)  # some states point inside a video's records
    json.dumps([state for _, state in served])  # plain data, as checkpoints need


def test_resampled_epochs_are_equal_per_rank_and_deterministic(shards):
    source = ShardSource(str(shards / "shards"), seed=0, resample=True)
    assert source.num_examples(rank=0, world_size=2) == source.num_examples(rank=1, world_size=2) == 3

    def take(rank, epoch):
        return [c.sample_id for c, _ in islice(source.examples(epoch=epoch, rank=rank, world_size=2), 3)]

    assert take(0, 0) == take(0, 0)
    assert take(0, 0) != take(1, 0) or take(0, 1) != take(1, 1)  # ranks draw their own shards
    with pytest.raises(ShardSourceError, match="resample: true"):
        ShardSource(str(shards / "shards")).num_examples(rank=0, world_size=2)
    assert ShardSource(str(shards / "shards"), examples_per_rank=5).num_examples(rank=1, world_size=4) == 5
