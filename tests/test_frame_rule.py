"""The frame for each sample time is the one the released tool names (docs/protocol.md, "The frame tool").

The released tool's primary path (decord) takes frame `int(round((t - first_pts) * avg_fps))`,
clipped to the stream, with decord numbering timestamps from the first frame (first_pts is 0
even when the stream starts later) and avg_fps FFmpeg's `avg_frame_rate`. The reference below
writes that rule out independently of eva (its sample times from `numpy.linspace`, as the
released tool computes them; its rate from PyAV's header, as decord reads it), and the frames
carry their own index, so the test checks the frames themselves, not merely equal pixels.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from eva_core.agent import AgentConfig
from eva_core.frame_select import DEFAULT_FRAME_RULE, frame_indices, frame_select, sample_times
from eva_core.reader import probe
from eva_core.sample_video import read_frame_index

BACKENDS = ["torchcodec", "pyav"]
VIDEOS = ["cfr_video", "vfr_video", "offset_video", "offset_mp4"]


def released_indices(path, start: float, end: float, n: int) -> list[int]:
    """The released tool's frame indices for a window (its `_build_timestamps` and decord rule)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        total = sum(1 for p in container.demux(stream) if p.pts is not None and p.size)
    if n == 1:
        times = [(start + end) / 2.0]
    else:
        eps = min(1e-3, (end - start) / (n * 4.0))
        times = np.linspace(start, max(start, end - eps), n).tolist()
    return [max(0, min(int(round(t * fps)), total - 1)) for t in times]


def test_rounding_rule_by_hand():
    # fps 2: t * fps = 0.5 -> 0 and 2.5 -> 2 (halves to even), 1.5 -> 2, 1.2 -> 1;
    # times before the stream clip to 0, after it to the last frame (10 frames: 9).
    assert frame_indices([0.25, 1.25, 0.75, 0.6, -1.0, 99.0], fps=2.0, num_frames=10) == [0, 2, 2, 1, 0, 9]


@pytest.mark.parametrize("window", [(0.0, 10.0, 32), (1.3, 4.7, 9), (0.0, 1.0, 31), (2.0, 2.5, 1), (0.1, 7.7, 113)])
def test_sample_times_are_numpy_linspace_to_the_bit(window):
    start, end, n = window
    eps = min(1e-3, (end - start) / (n * 4.0))
    expected = [(start + end) / 2.0] if n == 1 else np.linspace(start, end - eps, n).tolist()
    assert sample_times(start, end, n) == expected


def test_the_default_rule_is_the_released_one():
    assert DEFAULT_FRAME_RULE == "rounded_index" == AgentConfig().frame_rule


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEOS)
@pytest.mark.parametrize("window", [(0.0, None, 32), (1.3, 4.7, 9), (0.0, 1.0, 31), (2.0, 2.5, 1)])
def test_frames_are_the_released_tools_frames(request, backend, name, window):
    path = request.getfixturevalue(name)
    info = probe(path)
    start, end, n = window
    end = info.duration if end is None else end
    result = frame_select(path, start_time=start, end_time=end, nframes=n, resize=1.0, budget=None, backend=backend)
    assert result.frame_rule == "rounded_index"
    assert [read_frame_index(f) for f in result.frames] == released_indices(path, start, end, n)


def test_the_two_rules_differ_by_one_frame_where_a_time_is_past_half_a_frame(cfr_video):
    # 10 s at 30 fps, 32 samples over the whole video: t * 30 = i * 299.97 / 31. The played-at
    # frame is floor(t * 30), the released frame round(t * 30) (clipped to frame 299): one
    # later wherever the fraction is >= 0.5 (the last sample, 299.97, rounds to 300 -> 299).
    kwargs = dict(start_time=0.0, end_time=10.0, nframes=32, resize=1.0, budget=None)
    released = [read_frame_index(f) for f in frame_select(cfr_video, **kwargs).frames]
    played = [read_frame_index(f) for f in frame_select(cfr_video, frame_rule="played_at", **kwargs).frames]
    scaled = [i * (10.0 - 1e-3) / 31 * 30 for i in range(32)]
    assert played == [int(x) for x in scaled]
    assert released == [min(round(x), 299) for x in scaled]
    differ = sum(a != b for a, b in zip(released, played, strict=True))
    assert differ == sum(x - int(x) >= 0.5 for x in scaled[:-1]) > 0


def test_unknown_rule_is_refused(cfr_video):
    with pytest.raises(ValueError, match="frame_rule must be one of"):
        frame_select(cfr_video, start_time=0, end_time=1, nframes=2, frame_rule="nearest")
