"""Bad input to frame_select: a typed error with a reason, never a crash and never a hang.

What the protocol tolerates stays tolerated and is flagged: times outside the video are
clamped, an empty or inverted window falls back to the whole video.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys

import av
import numpy as np
import pytest
from eva_core.errors import FrameToolError, ToolErrorReason
from eva_core.frame_select import frame_select
from eva_core.reader import VideoReader

R = ToolErrorReason
BACKENDS = ["torchcodec", "pyav"]


def call(video, backend="auto", **kwargs):
    args = dict(start_time=0.0, end_time=5.0, nframes=4, resize=0.5)
    args.update(kwargs)
    return frame_select(video, backend=backend, **args)


def audio_only_bytes() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = (np.sin(np.linspace(0, 2000, 16000)) * 0.3).astype(np.float32)[None, :]
        for i in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_file(tmp_path, backend):
    with pytest.raises(FrameToolError, match="no such video file") as error:
        call(tmp_path / "nope.mp4", backend)
    assert error.value.reason is R.MISSING_FILE


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_directory_is_not_a_file(tmp_path, backend):
    with pytest.raises(FrameToolError) as error:
        call(tmp_path, backend)
    assert error.value.reason is R.MISSING_FILE


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_file_and_bytes(tmp_path, backend):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for source in (empty, b"", io.BytesIO(b"")):
        with pytest.raises(FrameToolError, match="empty") as error:
            call(source, backend)
        assert error.value.reason is R.EMPTY_FILE


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_file_is_not_a_video(tmp_path, backend):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(FrameToolError) as error:
        call(text, backend)
    assert error.value.reason is R.NOT_A_VIDEO


@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_only_file(backend):
    with pytest.raises(FrameToolError, match="audio") as error:
        call(audio_only_bytes(), backend)
    assert error.value.reason is R.NO_VIDEO_STREAM


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4(cfr_video, backend):
    data = cfr_video.read_bytes()
    with pytest.raises(FrameToolError) as error:
        call(data[: len(data) // 2], backend)  # the index (moov) is at the end: cut off
    assert error.value.reason is R.CORRUPT_VIDEO


@pytest.mark.parametrize("backend", BACKENDS)
def test_header_overwritten(cfr_video, backend):
    data = bytearray(cfr_video.read_bytes())
    rng = np.random.default_rng(0)
    data[8:4096] = rng.integers(0, 256, 4088, dtype=np.uint8).tobytes()
    with pytest.raises(FrameToolError) as error:
        call(bytes(data), backend)
    assert error.value.reason is R.CORRUPT_VIDEO


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "10", None, True, [1]])
@pytest.mark.parametrize("field", ["start_time", "end_time", "resize"])
def test_non_finite_or_non_numeric_arguments(cfr_video, field, value):
    with pytest.raises(FrameToolError, match=field) as error:
        call(cfr_video, **{field: value})
    assert error.value.reason is R.INVALID_ARGUMENTS


@pytest.mark.parametrize("nframes", [0, -3, 2.5, math.nan, "8", None])
def test_bad_nframes(cfr_video, nframes):
    with pytest.raises(FrameToolError, match="nframes") as error:
        call(cfr_video, nframes=nframes)
    assert error.value.reason is R.INVALID_ARGUMENTS


@pytest.mark.parametrize("resize", [0.0, -1.0])
def test_non_positive_resize(cfr_video, resize):
    with pytest.raises(FrameToolError, match="resize must be positive") as error:
        call(cfr_video, resize=resize)
    assert error.value.reason is R.INVALID_ARGUMENTS


def test_absurd_nframes_is_capped_and_flagged(cfr_video):
    result = call(cfr_video, nframes=10**12, resize=0.1, max_nframes=64, budget=None)
    assert result.effective.nframes == 64
    assert result.nframes_capped and "nframes_capped" in result.flags
    assert result.frames.shape[0] == 64


def test_integral_float_nframes_is_accepted(cfr_video):
    assert call(cfr_video, nframes=3.0).frames.shape[0] == 3


def test_times_outside_the_video_are_clamped_and_flagged(cfr_video):
    result = call(cfr_video, start_time=-20.0, end_time=1e9)
    assert (result.effective.start_time, result.effective.end_time) == (0.0, pytest.approx(10.0))
    assert result.window_clamped and not result.window_fallback


@pytest.mark.parametrize("window", [(7.0, 2.0), (4.0, 4.0), (50.0, 60.0)])
def test_empty_or_inverted_window_falls_back_to_the_whole_video(cfr_video, window):
    result = call(cfr_video, start_time=window[0], end_time=window[1])
    assert (result.effective.start_time, result.effective.end_time) == (0.0, pytest.approx(10.0))
    assert result.window_fallback and "window_fallback" in result.flags


def test_budget_fallback_is_flagged(cfr_video):
    # 252x336 at 1.0: 9 * 12 = 108 tokens a frame; 64 frames = 6912 > budget 1000, cap 720/252 > 1
    # so no cap; r = (1000 / 6912) ** (1/3) = 0.525 -> nframes int(64 * 0.525) = 33.
    from eva_core.frame_select import Budget

    result = call(cfr_video, nframes=64, resize=1.0, budget=Budget(max_tokens=1000))
    assert result.budget_scaled and not result.budget_resize_capped
    assert result.effective.nframes == 33
    assert result.visual_tokens <= 1000 * 1.2


def test_decode_time_limit_gives_a_timeout_not_a_hang(cfr_video):
    reader = VideoReader(cfr_video, workers=2, timeout_s=1e-9)
    with pytest.raises(FrameToolError) as error:
        reader.frames_played_at([i * 0.3 for i in range(32)])
    assert error.value.reason is R.DECODE_TIMEOUT


def test_fallback_to_pyav_warns_once_when_ffmpeg_libraries_are_missing(cfr_video):
    # A fresh interpreter where loading torchcodec's FFmpeg-backed core fails, as it does on a
    # machine without FFmpeg's shared libraries.
    script = f"""
import sys, warnings, importlib.abc
class NoFFmpeg(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("torchcodec"):
            raise OSError("libavutil.so.59: cannot open shared object file")
sys.meta_path.insert(0, NoFFmpeg())
warnings.simplefilter("always")
from eva_core.frame_select import frame_select
with warnings.catch_warnings(record=True) as caught:
    a = frame_select({str(cfr_video)!r}, start_time=0, end_time=10, nframes=4, resize=0.5)
    b = frame_select({str(cfr_video)!r}, start_time=0, end_time=10, nframes=4, resize=0.5)
msgs = [str(w.message) for w in caught if "PyAV" in str(w.message)]
print(len(msgs), tuple(a.frames.shape), msgs[0])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, rest = out.stdout.split(" ", 1)
    assert count == "1"
    assert "(4, 3, 112, 168)" in rest
    assert "apt-get install ffmpeg" in rest
