"""Both decoders return exactly the frames a sequential decode gives, under both frame rules.

The reference decodes every frame in order with PyAV. For the "played_at" rule it picks, for
each sample time, the last frame whose presentation time is <= that time; the default rule
(the released tool's frame index) is checked against the released arithmetic in
`tests/test_frame_rule.py`. Both backends must match pixel for pixel on constant and variable
frame rate videos and on streams that do not start at zero.
"""

from __future__ import annotations

import bisect
import io

import av
import pytest
import torch
from eva_core.frame_select import frame_select, sample_times
from eva_core.reader import VideoReader, probe
from eva_core.sample_video import read_frame_index

BACKENDS = ["torchcodec", "pyav"]


def sequential_frames(path) -> tuple[list[float], list[torch.Tensor]]:
    """Every frame in presentation order: pts in seconds (pts * num / den), pixels."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        frames = [(f.pts * tb.numerator / tb.denominator, torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1))
                  for f in container.decode(stream)]
    frames.sort(key=lambda x: x[0])
    return [p for p, _ in frames], [x for _, x in frames]


def played_at(times: list[float], pts: list[float]) -> list[int]:
    """Index of the frame played at each time: the last whose pts <= the time."""
    return [max(0, bisect.bisect_right(pts, t) - 1) for t in times]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["cfr_video", "vfr_video", "offset_video", "offset_mp4"])
@pytest.mark.parametrize("window", [(0.0, None, 16), (1.3, 4.7, 9), (2.0, 2.5, 7), (0.0, None, 1)])
def test_played_at_frames_equal_sequential_decode(request, backend, name, window):
    path = request.getfixturevalue(name)
    info = probe(path)
    pts, reference = sequential_frames(path)
    assert info.num_frames == len(pts)
    assert info.begin == pytest.approx(pts[0], abs=1e-9)

    start, end, n = window
    end = info.duration if end is None else end
    result = frame_select(path, start_time=start, end_time=end, nframes=n, resize=1.0, backend=backend, budget=None,
                          frame_rule="played_at")

    expected = played_at([info.begin + t for t in sample_times(start, end, n)], pts)
    assert result.frames.shape == (n, 3, info.height, info.width)
    for got, i in zip(result.frames, expected, strict=True):
        assert torch.equal(got, reference[i])
    # The frames carry their own index: the right frames, not merely equal pixels.
    assert [read_frame_index(f) for f in result.frames] == expected
    assert result.decode_pts == pytest.approx([pts[i] for i in expected], abs=1e-9)


@pytest.mark.parametrize("name", ["cfr_video", "vfr_video", "offset_video", "offset_mp4"])
def test_backends_agree_on_stream_facts(request, name):
    path = request.getfixturevalue(name)
    a = VideoReader(path, backend="torchcodec").info
    b = VideoReader(path, backend="pyav").info
    assert (a.width, a.height, a.num_frames, a.fps) == (b.width, b.height, b.num_frames, b.fps)
    assert a.begin == pytest.approx(b.begin, abs=1e-6)
    # The end may differ by the last frame's duration (see eva_core/decoders.py).
    assert abs(a.end - b.end) <= 1.01 / min(a.fps, b.fps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_bytes_and_file_like_give_the_same_frames(cfr_video, backend):
    data = cfr_video.read_bytes()
    kwargs = dict(start_time=1.0, end_time=9.0, nframes=12, resize=0.5, backend=backend)
    by_path = frame_select(cfr_video, **kwargs)
    by_bytes = frame_select(data, **kwargs)
    by_file = frame_select(io.BytesIO(data), **kwargs)
    assert torch.equal(by_path.frames, by_bytes.frames)
    assert torch.equal(by_path.frames, by_file.frames)


def test_unsorted_and_repeated_times_keep_their_order(cfr_video):
    reader = VideoReader(cfr_video, backend="torchcodec", workers=2)
    times = [9.0, 0.5, 5.0, 0.5, 2.0, 7.5, 3.3, 8.8, 1.1]
    decoded = reader.frames_played_at(times)
    assert [read_frame_index(f) for f in decoded.data] == [int(t * 30) for t in times]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_split_across_decoders_equals_one_decoder(cfr_video, workers):
    times = [i * 0.31 for i in range(32)]
    one = VideoReader(cfr_video, workers=1).frames_played_at(times)
    many = VideoReader(cfr_video, workers=workers).frames_played_at(times)
    assert torch.equal(one.data, many.data)
    assert one.pts == many.pts


def test_episode_calls_reuse_the_cached_reader(cfr_video):
    from eva_core.reader import default_cache, open_video

    default_cache.clear()
    first = open_video(cfr_video)
    frame_select(cfr_video, start_time=0, end_time=5, nframes=4)
    assert open_video(cfr_video) is first
    assert len(default_cache) == 1


def test_resized_frames_have_protocol_sizes(cfr_video):
    # 252 * 0.5 / 28 = 4.5 -> round half to even = 4 -> 112; 336 * 0.5 / 28 = 6 -> 168
    result = frame_select(cfr_video, start_time=0, end_time=10, nframes=3, resize=0.5)
    assert result.frames.shape == (3, 3, 112, 168)
    assert result.tokens_per_frame == 4 * 6
    assert result.visual_tokens == 72
