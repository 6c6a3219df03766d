"""`ShardSource`: eva-data shards with oracle SFT records as conversations, exact and resampled epochs."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from itertools import islice
from pathlib import Path

import pytest
import torch
from eva_train.data.shards import ShardSource, ShardSourceError, count_records

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


def _damaged_copy(shards: Path, out: Path, where: dict[int, str]) -> Path:
    """A copy of the shard folder with bytes of the video of shard i overwritten: 400 at the start
    of its frame data ("first": the first frame fails, so eva-data skips the video) or a third of
    the file from its middle on ("middle": the first frame decodes, later frames do not)."""
    shutil.copytree(shards / "shards", out)
    tars = sorted(out.glob("*.tar"))
    for i, place in where.items():
        with tarfile.open(tars[i]) as tar:
            member = next(m for m in tar if m.name.endswith(".mp4"))
        data = bytearray(tars[i].read_bytes())
        video = bytes(data[member.offset_data:member.offset_data + member.size])
        at = member.offset_data + (video.find(b"mdat") + 4 if place == "first" else len(video) // 2)
        size = 400 if place == "first" else len(video) // 3  # the second half's frames: a decoder conceals a small hole
        data[at:at + size] = b"\xa5" * size
        tars[i].write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("place", ["first", "middle"])
def test_a_corrupt_video_costs_its_records_and_the_epoch_still_serves_its_count(shards, tmp_path, place, caplog):
    """Issue 17: a skipped video ended an exact epoch early ("source ended"). Its records are
    skipped with their reason and the epoch wraps to its first records: 6 served, as counted."""
    clean = [c.sample_id for c, _ in ShardSource(str(shards / "shards"), seed=0).examples(epoch=0, rank=0, world_size=1)]
    source = ShardSource(str(_damaged_copy(shards, tmp_path / "shards", {1: place})), seed=0)
    assert source.num_examples(rank=0, world_size=1) == 6  # counted from the records, before any video is read
    with caplog.at_level(logging.WARNING):
        served = [(c.sample_id, state) for c, state in source.examples(epoch=0, rank=0, world_size=1)]
    ids = [i for i, _ in served]
    # the damaged video (the second shard's, synth_2_00001) holds 2 of the 6 records
    lost = {r["id"] for r in _records(shards) if r["episode"]["video"]["path"].endswith("_00001.mp4")}
    assert len(lost) == 2 and not lost & set(ids)
    good = [i for i in clean if i not in lost]
    assert ids == good + good[:2]  # 4 readable, then the epoch's first 2 again
    assert [state["served"] for _, state in served] == [1, 2, 3, 4, 5, 6]
    # The damaged video is the epoch's last: skipped after the 4th record, counted from the 5th on.
    counts = [(state["skipped_videos"], state["skipped_records"]) for _, state in served]
    if place == "first":  # eva-data's check skips the video, with its reason
        assert "skipped corrupt sample" in caplog.text and "corrupt_video" in caplog.text
        assert counts == [(0, 0)] * 4 + [(1, 0)] * 2
    else:  # the first frame decodes: both records fail where their frames are decoded, here
        assert caplog.text.count("skipped record sft-oracle-") == 2 and "corrupt_video" in caplog.text
        assert counts == [(0, 0)] * 4 + [(0, 2)] * 2
    assert "serving the epoch's first records again" in caplog.text
    for k, (_, state) in enumerate(served[:-1]):  # every state resumes with the rest, across the wrap too
        rest = list(source.examples(epoch=0, rank=0, world_size=1, state=state))
        assert [c.sample_id for c, _ in rest] == ids[k + 1:], k
        assert rest[-1][1] == served[-1][1], k  # the same end: position, served and skipped counts


def test_the_training_stream_over_a_corrupt_video_delivers_its_epoch(shards, tmp_path, tiny_model_dir):
    """The symptom of issue 17: the stream over these shards stopped with "source ended at sample 4 of 6"."""
    from eva_train.data.conversations import SFTStream
    from eva_train.data.loaders import StreamPosition

    source = ShardSource(str(_damaged_copy(shards, tmp_path / "shards", {1: "first"})), seed=0)
    stream = SFTStream(source, str(tiny_model_dir), batch_size=2, max_length=4096, window_batches=2)
    batches = [(b, after) for b, after in stream.batches(StreamPosition())]
    assert [b.input_ids.shape[0] for b, _ in batches] == [2, 2, 2] == [2] * stream.num_batches()
    assert batches[-1][1] == StreamPosition(epoch=1)


def test_shards_with_no_readable_video_fail_clearly(shards, tmp_path):
    source = ShardSource(str(_damaged_copy(shards, tmp_path / "shards", {0: "first", 1: "first", 2: "first"})))
    with pytest.raises(ShardSourceError, match="no readable sft records .* every video was skipped as corrupt"):
        list(source.examples(epoch=0, rank=0, world_size=1))
