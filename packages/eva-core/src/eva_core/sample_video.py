"""Generated videos with known content, for the quickstart, tests and benchmarks.

Each frame carries its own index as a row of 16 black/white cells across the top, so any
decoded frame can be identified (`read_frame_index`), and a moving colour gradient below so
that consecutive frames differ the way real footage does. Written with PyAV's bundled
libx264, so no system FFmpeg is needed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

INDEX_BITS = 16
TIME_BASE = Fraction(1, 90000)


def _frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the index bits in the top band, a moving gradient below."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    phase = index * 0.05
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 0.5 + 0.5 * np.sin(2 * np.pi * (x + phase))
    img[..., 1] = 0.5 + 0.5 * np.sin(2 * np.pi * (y + 0.7 * phase))
    img[..., 2] = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y - 0.3 * phase))
    img = img * 200.0 + 28.0
    band = max(8, height // 8)
    cell = width // INDEX_BITS
    for bit in range(INDEX_BITS):
        img[:band, bit * cell : (bit + 1) * cell] = 255.0 if (index >> bit) & 1 else 0.0
    return img.astype(np.uint8)


def read_frame_index(frame: torch.Tensor) -> int:
    """The index written by `write_sample_video` into a decoded frame.

    Args:
        frame: uint8 [3, H, W] at the video's original size.
    """
    height, width = frame.shape[-2:]
    band = max(8, height // 8)
    cell = width // INDEX_BITS
    gray = frame.float().mean(dim=0)
    index = 0
    for bit in range(INDEX_BITS):
        inner = gray[band // 4 : 3 * band // 4, bit * cell + cell // 4 : (bit + 1) * cell - cell // 4]
        if inner.mean() > 127:
            index |= 1 << bit
    return index


def sample_frame_times(n_frames: int, fps: float, *, start: float = 0.0, vfr: bool = False) -> list[float]:
    """Presentation times in seconds; with `vfr`, frame intervals alternate 1x, 2x and 0.5x."""
    if not vfr:
        return [start + i / fps for i in range(n_frames)]
    pattern = (1.0, 2.0, 0.5)
    times, t = [], start
    for i in range(n_frames):
        times.append(t)
        t += pattern[i % 3] / fps
    return times


def write_sample_video(
    target: str | Path | None = None,
    *,
    duration: float = 10.0,
    fps: float = 30.0,
    width: int = 320,
    height: int = 240,
    gop: int = 30,
    start: float = 0.0,
    vfr: bool = False,
    container: str = "mp4",
    crf: int = 23,
) -> bytes | Path:
    """Encode an H.264 video whose frames are identifiable by `read_frame_index`.

    Args:
        target: file path to write; None returns the bytes.
        duration: seconds of video (frames = round(duration * fps)).
        fps: nominal frame rate.
        width, height: frame size (even numbers).
        gop: keyframe interval in frames.
        start: presentation time of the first frame (non-zero start times happen in real files).
        vfr: variable frame rate (irregular frame intervals).
        container: "mp4" or "matroska".
        crf: x264 quality (lower is better).
    """
    n_frames = max(1, round(duration * fps))
    times = sample_frame_times(n_frames, fps, start=start, vfr=vfr)
    frames = (_frame_pixels(index, width, height) for index in range(n_frames))
    data = encode_h264(frames, times, fps=fps, width=width, height=height, gop=gop, crf=crf, container=container)
    if target is None:
        return data
    path = Path(target)
    path.write_bytes(data)
    return path


def encode_h264(
    frames: Iterable[np.ndarray],
    times: Iterable[float] | None = None,
    *,
    fps: float,
    width: int,
    height: int,
    gop: int,
    crf: int = 23,
    preset: str = "veryfast",
    container: str = "mp4",
    threads: int | None = None,
    lookahead: int | None = None,
) -> bytes:
    """Encode RGB frames as H.264 (yuv420p, no B-frames) with PyAV's bundled libx264.

    Args:
        frames: uint8 [H, W, 3] each.
        times: presentation time of each frame, seconds; None: frame i at i / fps.
        fps: nominal frame rate written in the stream.
        width, height: frame size (even numbers).
        gop: keyframe interval in frames.
        crf: x264 quality (lower is better).
        preset: x264 speed preset.
        container: "mp4" or "matroska".
        threads: x264 threads; 1 makes the bytes independent of the machine's core count.
        lookahead: x264 rate-control lookahead in frames (`rc-lookahead`); None keeps the
            preset's. 0 turns the lookahead off, and with it the macroblock tree: the only way
            to same bytes for the same frames in every process. The lookahead's motion search
            of PyAV 18's libx264 (core 165) reads uninitialised stack memory (valgrind: "use of
            uninitialised value" under x264_encoder_encode -> lookahead -> slicetype analysis),
            so its output depends on whatever ran on the thread's stack before.
    """
    buffer = io.BytesIO()
    out = av.open(buffer, mode="w", format=container)
    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = TIME_BASE
    stream.codec_context.time_base = TIME_BASE
    options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "crf": str(crf),
               "preset": preset, "bf": "0"}
    if threads is not None:
        options["threads"] = str(threads)
    if lookahead is not None:
        options["rc-lookahead"] = str(lookahead)
    stream.options = options
    pairs = zip(frames, times, strict=True) if times is not None else ((f, i / fps) for i, f in enumerate(frames))
    for img, t in pairs:
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = round(t / TIME_BASE)
        frame.time_base = TIME_BASE
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return buffer.getvalue()
