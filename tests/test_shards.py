"""Shards: size-capped writing, exact and resampled epochs over 2 ranks x 2 workers, resuming,
corrupt data, and decoding from bytes."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
from pathlib import Path

import pytest
from eva_core.sample_video import read_frame_index, write_sample_video
from eva_data.shards.decode import DecodeFrames
from eva_data.shards.loader import ShardLoader
from eva_data.shards.position import StreamResumeError
from eva_data.shards.sample import SampleError, ShardSample
from eva_data.shards.stream import ShardStream, ShardStreamError, list_shards, split_quota
from eva_data.shards.writer import ShardWriter, pack, read_index, tar_archive_bytes

UNEVEN = [5, 1, 3, 8, 2, 6, 4]  # samples per shard: 29 in 7 shards


@pytest.fixture(scope="module")
def tiny_video() -> bytes:
    """1 s at 4 fps, 64x48: frames carry their index (eva_core.sample_video)."""
    return write_sample_video(None, duration=1.0, fps=4, width=64, height=48, gop=4)


def _write_uneven(root: Path, video: bytes, counts=UNEVEN) -> list[str]:
    key = 0
    urls = []
    for shard, count in enumerate(counts):
        with ShardWriter(root / f"part{shard}-%03d.tar") as writer:
            for _ in range(count):
                writer.write(ShardSample(key=f"s{key:03d}", video=video, items=[{"index": key}]))
                key += 1
        urls.append(str(root / f"part{shard}-000.tar"))
    return urls


@pytest.fixture(scope="module")
def uneven(tmp_path_factory, tiny_video) -> list[str]:
    return _write_uneven(tmp_path_factory.mktemp("uneven"), tiny_video)


ALL_KEYS = {f"s{k:03d}" for k in range(sum(UNEVEN))}


# --- writing ---------------------------------------------------------------------------------------

def test_writer_caps_shard_size_and_round_trips(tmp_path, tiny_video):
    samples = [ShardSample(key=f"v{i}", video=tiny_video * (1 + i % 4), items=[{"index": i, "q": "x" * i}],
                           trajectories=[{"turns": i}] if i % 2 else [], meta={"i": i}) for i in range(40)]
    cap = 48 * 1024
    shards = pack(samples, tmp_path / "out", max_bytes=cap)
    assert len(shards) > 3
    for info in shards:
        path = tmp_path / "out" / info.url
        assert path.stat().st_size == info.bytes <= cap
    assert [s.count for s in read_index(tmp_path / "out")] == [s.count for s in shards]
    assert sum(s.count for s in shards) == 40
    back = list(ShardStream(tmp_path / "out", shuffle_shards=False, validate_video=False))
    assert [s.key for s in back] == [s.key for s in samples]
    for a, b in zip(samples, back, strict=True):
        assert (a.video, a.items, a.trajectories, a.meta) == (b.video, b.items, b.trajectories, b.meta)
    again = pack(samples, tmp_path / "again", max_bytes=cap)
    for info in again:  # same samples, same bytes
        assert (tmp_path / "again" / info.url).read_bytes() == (tmp_path / "out" / info.url).read_bytes()


def test_tar_size_arithmetic():
    # one member of 1 byte: 512 header + 512 data; two end blocks: 1024 + 1024 = 2048 -> one 10240 record
    assert tar_archive_bytes([1]) == 10240
    # 20 members of 512 bytes: 20 * 1024 + 1024 = 21504 -> three records = 30720
    assert tar_archive_bytes([512] * 20) == 30720


def test_oversized_sample_gets_its_own_shard(tmp_path, tiny_video, caplog):
    big = ShardSample(key="big", video=tiny_video * 40)
    small = [ShardSample(key=f"s{i}", video=tiny_video) for i in range(2)]
    with caplog.at_level(logging.WARNING):
        shards = pack([small[0], big, small[1]], tmp_path, max_bytes=4 * 10240)
    assert [s.count for s in shards] == [1, 1, 1]
    assert "gets a shard of its own" in caplog.text


def test_sample_key_rules(tiny_video):
    with pytest.raises(SampleError, match="no dot"):
        ShardSample(key="a.b", video=tiny_video)
    with pytest.raises(SampleError, match="exactly one video member"):
        ShardSample.from_tar({"__key__": "k", "json": b"{}"})
    with pytest.raises(SampleError, match="malformed JSON"):
        ShardSample.from_tar({"__key__": "k", "mp4": tiny_video, "json": b"{not json"})


# --- epochs over ranks and workers ---------------------------------------------------------------

def _roles(urls, *, epoch=0, world=2, workers=2, **kw) -> dict[tuple[int, int], list[str]]:
    """The keys each (rank, worker) role yields in `epoch`, every role played in this process."""
    keys = {}
    for r in range(world):
        for w in range(workers):
            stream = ShardStream(urls, rank=r, world_size=world, worker=w, num_workers=workers, **kw)
            stream.set_epoch(epoch)
            keys[(r, w)] = [s.key for s in stream]
    return keys


def test_exact_epoch_two_ranks_two_workers_every_sample_once(uneven):
    splits = []
    for epoch in range(3):
        roles = _roles(uneven, epoch=epoch, buffer_size=4, seed=5, validate_video=False)
        keys = [k for got in roles.values() for k in got]
        assert sorted(keys) == sorted(ALL_KEYS), f"epoch {epoch}"
        assert all(roles.values()), "7 shards over 4 roles: every role has some"
        splits.append({role: sorted(got) for role, got in roles.items()})
    assert splits[0] != splits[1]  # the shard order is reshuffled each epoch


def test_exact_epochs_reshuffle_and_stay_complete(uneven):
    orders = []
    for epoch in range(2):
        stream = ShardStream(uneven, buffer_size=4, seed=5, validate_video=False)
        stream.set_epoch(epoch)
        orders.append([s.key for s in stream])
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(ALL_KEYS)
    assert orders[0] != orders[1]


def test_dataloader_workers_split_exactly(uneven):
    keys = []
    for rank in range(2):
        loader = ShardLoader(ShardStream(uneven, rank=rank, world_size=2, seed=1), batch_size=3, num_workers=2)
        keys += [s.key for batch in loader for s in batch]
    assert sorted(keys) == sorted(ALL_KEYS)


def test_resampling_gives_equal_steps_per_rank(uneven):
    per_rank = -(-sum(UNEVEN) // 2)  # 15
    steps, seen = [], set()
    for rank in range(2):
        stream = ShardStream(uneven, rank=rank, world_size=2, seed=2, resample=True, samples_per_rank=per_rank,
                             buffer_size=3)
        batches = list(ShardLoader(stream, batch_size=4, num_workers=2))
        steps.append(len(batches))
        assert sum(len(b) for b in batches) == per_rank
        seen |= {s.key for b in batches for s in b}
    # worker quotas 8 and 7 -> ceil(8/4) + ceil(7/4) = 4 batches on each rank
    assert steps == [4, 4]
    assert split_quota(15, 2, 0) == 8 and split_quota(15, 2, 1) == 7
    assert seen <= ALL_KEYS


def test_resampling_length_from_the_index(tmp_path, tiny_video):
    samples = [ShardSample(key=f"k{i}", video=tiny_video) for i in range(9)]
    pack(samples, tmp_path, max_bytes=1 << 20, max_count=2)
    stream = ShardStream(tmp_path, rank=1, world_size=2, resample=True, validate_video=False)
    assert stream.samples_per_rank == 5  # ceil(9 / 2)
    assert len(list(stream)) == 5


# --- resuming -------------------------------------------------------------------------------------

@pytest.mark.parametrize("resample", [False, True])
def test_stopped_and_resumed_stream_yields_the_same_remaining_sequence(uneven, resample):
    kw = dict(rank=1, world_size=2, worker=0, num_workers=2, seed=3, buffer_size=5, resample=resample,
              samples_per_rank=20, validate_video=False)
    full = [s.key for s in ShardStream(uneven, **kw)]
    assert len(full) == (10 if resample else len(full))
    for stop in range(len(full) + 1):
        stream = ShardStream(uneven, **kw)
        it = iter(stream)
        head = [next(it).key for _ in range(stop)]
        state = json.loads(json.dumps(stream.state_dict()))
        resumed = ShardStream(uneven, **kw)
        resumed.load_state_dict(state)
        assert head + [s.key for s in resumed] == full, f"stopped after {stop}"


def test_resumed_dataloader_continues_the_batch_sequence(uneven):
    def make():
        return ShardLoader(ShardStream(uneven, seed=4, buffer_size=3), batch_size=2, num_workers=2)

    reference = make()
    epoch0 = [[s.key for s in b] for b in reference]
    epoch1 = [[s.key for s in b] for b in reference]
    assert sorted(k for b in epoch0 for k in b) == sorted(ALL_KEYS)
    for stop in (3, 8):  # odd and even counts: the worker rotation must continue
        loader = make()
        head = []
        for batch in loader:
            head.append([s.key for s in batch])
            if len(head) == stop:
                break
        state = json.loads(json.dumps(loader.state_dict()))
        resumed = make()
        resumed.load_state_dict(state)
        rest = [[s.key for s in b] for b in resumed]
        assert head + rest == epoch0, f"stopped after {stop} batches"
        assert [[s.key for s in b] for b in resumed] == epoch1


def test_resume_errors(uneven):
    stream = ShardStream(uneven, rank=0, world_size=2, validate_video=False)
    next(iter(stream))
    other = ShardStream(uneven, rank=1, world_size=2)
    with pytest.raises(StreamResumeError, match="rank 0/2 loaded into rank 1/2"):
        other.load_state_dict(stream.state_dict())
    loader = ShardLoader(ShardStream(uneven), batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="saved with 0 workers"):
        loader.load_state_dict({"epoch": 0, "next_role": 0, "batches": 0, "num_workers": 0, "positions": {}})


# --- corrupt data ----------------------------------------------------------------------------------

def _tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    """A tar holding each sample's members, grouped by key as WebDataset expects."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_corrupt_samples_and_shards_are_skipped_and_counted(tmp_path, tiny_video, caplog):
    meta = json.dumps({"items": []}).encode()
    ok = {"mp4": tiny_video, "json": meta}
    (tmp_path / "a_good.tar").write_bytes(_tar({f"g{i}": ok for i in range(3)}))
    (tmp_path / "b_bad_samples.tar").write_bytes(_tar({
        "b0": {"mp4": tiny_video, "json": b"{broken"},  # bad JSON
        "b1": {"mp4": b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500, "json": meta},  # a damaged MP4
        "b2": {"json": meta},  # no video
        "b3": ok,
    }))
    full = _tar({f"t{i}": ok for i in range(4)})
    member = 512 + -(-len(tiny_video) // 512) * 512 + 512 + 512  # one sample: mp4 and json, headers and data
    (tmp_path / "c_truncated.tar").write_bytes(full[:2 * member + 512 + 100])  # cut inside t2's video
    (tmp_path / "d_garbage.tar").write_bytes(b"this is not a tar file" * 100)
    (tmp_path / "e_good.tar").write_bytes(_tar({"z": ok}))

    with caplog.at_level(logging.WARNING):
        stream = ShardStream(tmp_path, shuffle_shards=False)
        keys = [s.key for s in stream]
    assert keys == ["g0", "g1", "g2", "b3", "t0", "t1", "z"]
    position = stream.last_position
    assert position.skipped_samples == 3  # bad JSON, undecodable video, missing video
    assert position.skipped_shards == 2  # truncated, garbage
    assert caplog.text.count("skipped corrupt sample") == 3
    assert caplog.text.count("reading stopped") == 2

    # resuming just before the truncated shard's last good sample counts nothing twice
    stream = ShardStream(tmp_path, shuffle_shards=False)
    it = iter(stream)
    while next(it).key != "t0":
        pass
    resumed = ShardStream(tmp_path, shuffle_shards=False)
    resumed.load_state_dict(stream.state_dict())
    assert [s.key for s in resumed] == ["t1", "z"]
    assert (resumed.last_position.skipped_samples, resumed.last_position.skipped_shards) == (3, 2)


def test_an_overwritten_member_header_costs_its_sample_only_and_is_counted(tmp_path, tiny_video, caplog):
    meta = json.dumps({"items": []}).encode()
    data = bytearray(_tar({f"s{i:02d}": {"mp4": tiny_video, "json": meta} for i in range(12)}))
    header = data.find(b"s05.mp4")
    data[header:header + 512] = b"\xa5" * 512  # the header of sample 5's video, checksum and all
    (tmp_path / "a.tar").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        stream = ShardStream(tmp_path, shuffle_shards=False)
        keys = [s.key for s in stream]
    assert keys == [f"s{i:02d}" for i in range(12) if i != 5]  # before: s00..s04 and nothing after
    position = stream.last_position
    assert (position.skipped_samples, position.skipped_shards) == (1, 0)
    assert len(keys) + position.skipped_samples == 12  # every sample accounted for
    assert "unreadable bytes" in caplog.text and "s05" in caplog.text


def test_garbage_inside_a_video_is_a_counted_skip(tmp_path, caplog):
    """Overwritten frame data leaves the MP4 container readable: opening alone passed it (issue 17).
    The default check decodes the first frame; "all_frames" decodes every frame."""
    video = write_sample_video(None, duration=4.0, fps=8, width=64, height=48, gop=8)  # 32 frames, mdat first
    mdat = video.find(b"mdat") + 4
    middle, first = bytearray(video), bytearray(video)
    middle[len(video) // 2:len(video) // 2 + 400] = b"\xa5" * 400  # inside the frames of the second second
    first[mdat:mdat + 400] = b"\xa5" * 400  # inside the first frame
    meta = json.dumps({"items": []}).encode()
    (tmp_path / "a.tar").write_bytes(_tar({"first": {"mp4": bytes(first), "json": meta},
                                           "middle": {"mp4": bytes(middle), "json": meta}, "ok": {"mp4": video, "json": meta}}))
    seen = {}
    for check in (True, "all_frames"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            stream = ShardStream(tmp_path, shuffle_shards=False, validate_video=check)
            seen[check] = [s.key for s in stream]
        assert len(seen[check]) + stream.last_position.skipped_samples == 3  # every sample accounted for
        assert "skipped corrupt sample" in caplog.text and "corrupt_video" in caplog.text and "(first)" in caplog.text
    assert seen == {True: ["middle", "ok"], "all_frames": ["ok"]}
    with pytest.raises(ValueError, match="validate_video must be one of"):
        ShardStream(tmp_path, validate_video="some")


def test_skips_after_the_last_sample_are_in_the_last_position(tmp_path, tiny_video, caplog):
    """A corrupt sample after the last good one is counted where a resume reads it (issue 17): the
    stream's end writes `last_position`, so a resume neither reads nor counts it again."""
    meta = json.dumps({"items": []}).encode()
    (tmp_path / "a.tar").write_bytes(_tar({"g0": {"mp4": tiny_video, "json": meta},
                                           "g1": {"mp4": tiny_video, "json": meta},
                                           "z": {"mp4": b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500, "json": meta}}))
    stream = ShardStream(tmp_path, shuffle_shards=False)
    assert [s.key for s in stream] == ["g0", "g1"]
    end = stream.last_position
    assert (end.skipped_samples, end.yielded, end.cursor, end.buffer) == (1, 2, (1, 0), ())  # 2 read + 1 skipped
    resumed = ShardStream(tmp_path, shuffle_shards=False)
    resumed.load_state_dict(stream.state_dict())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert list(resumed) == []
    assert "skipped corrupt sample" not in caplog.text  # not read again
    assert resumed.last_position.skipped_samples == 1  # nor counted again


def test_resampling_over_only_broken_shards_fails_clearly(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"garbage" * 100)
    stream = ShardStream(tmp_path, resample=True, samples_per_rank=3, max_failures=5)
    with pytest.raises(ShardStreamError, match="6 shards in a row gave no sample"):
        list(stream)


# --- decoding -------------------------------------------------------------------------------------

def test_decode_frames_from_bytes_without_temporary_files(tmp_path, tiny_video, monkeypatch):
    pack([ShardSample(key="v", video=tiny_video)], tmp_path)

    def no_temp(*a, **k):
        raise AssertionError("decoding must not write temporary files")

    for name in ("mkstemp", "NamedTemporaryFile", "TemporaryFile", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, no_temp)
    (sample,) = list(ShardStream(tmp_path, transform=DecodeFrames(nframes=4, resize=1.0)))
    frames = sample.frames.frames
    assert frames.shape == (4, 3, 56, 56)  # 64x48 -> multiples of 28 at resize 1.0
    assert sample.info.num_frames == 4 and sample.reader is None
    # 4 evenly spaced times over 1 s at 4 fps (0, 0.333, 0.666, 0.999) name frames round(4 t) =
    # 0, 1, 3 and 4, clipped to the last frame, 3 (the released tool's rule)
    raw = DecodeFrames(nframes=4, resize=1.0)(ShardSample(key="v", video=tiny_video))
    assert raw.frames.decode_pts == pytest.approx([0.0, 0.25, 0.75, 0.75])


def test_list_shards(tmp_path, tiny_video):
    for i in range(3):
        (tmp_path / f"shard-{i:02d}.tar").write_bytes(_tar({"a": {"mp4": tiny_video, "json": b"{}"}}))
    assert list_shards(tmp_path) == [str(tmp_path / f"shard-{i:02d}.tar") for i in range(3)]
    assert list_shards(str(tmp_path / "shard-{00..02}.tar")) == list_shards(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        list_shards(tmp_path / "empty")


def test_decoded_frames_are_the_right_ones(tmp_path, tiny_video):
    pack([ShardSample(key="v", video=tiny_video)], tmp_path)
    (sample,) = list(ShardStream(tmp_path, transform=DecodeFrames(nframes=4, resize=1.0, budget=None)))
    # frames are resized to 56x56 by the protocol, which keeps the index band readable; times
    # 0, 0.333, 0.666, 0.999 s at 4 fps name frames round(4 t) = 0, 1, 3, 4 -> 3 (clipped)
    assert [read_frame_index(f) for f in sample.frames.frames] == [0, 1, 3, 3]
