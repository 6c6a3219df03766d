"""Frame decoders: torchcodec (the fast path) and PyAV (the fallback without system FFmpeg).

Both answer two questions the same way: which frame has index i (frames numbered 0.. in
presentation order, as decord numbers them; the released tool's rule, docs/protocol.md, "The
frame tool"), and which frame is *played* at a time t, that is the last frame whose presentation time is
<= t (torchcodec's `get_frames_played_at`, the released tool's fallback). Both index the
stream from its packets (exact, not from header estimates), report the same average frame
rate (FFmpeg's `avg_frame_rate`, the rate decord reports) and return the same frames;
`tests/test_frame_decoding.py` holds them to it pixel for pixel.

One known difference: torchcodec uses the system FFmpeg, PyAV its bundled one, and FFmpeg 5
leaves the duration of the last packet of an MP4 with an edit list unset, so there torchcodec's
stream end is one frame earlier than PyAV's. Frames are the same; only the end bound differs.

torchcodec needs FFmpeg's shared libraries on the system. When it cannot load them, `open_decoder`
falls back to PyAV, whose wheels bundle FFmpeg, and warns once.
"""

from __future__ import annotations

import bisect
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from eva_core.errors import FrameToolError
from eva_core.video import (
    LoadedSource,
    VideoInfo,
    average_fps,
    classify_unreadable,
    header_frame_rate,
)

Backend = Literal["auto", "torchcodec", "pyav"]


@dataclass(frozen=True)
class DecodedFrames:
    """Frames and their presentation times.

    Attributes:
        data: uint8 [N, 3, H, W], RGB, original size.
        pts: presentation time of each frame, seconds (stream time).
    """

    data: torch.Tensor
    pts: list[float]


class Decoder(Protocol):
    """What the frame tool needs from a decoder. One decoder serves one thread at a time."""

    info: VideoInfo

    def frames_at(self, indices: list[int]) -> DecodedFrames:
        """Frames with the given indices (0 = first in presentation order), in the order asked."""
        ...

    def frames_played_at(self, seconds: list[float]) -> DecodedFrames:
        """Frames played at the given stream times, in the order asked."""
        ...


@functools.cache
def torchcodec_status() -> str | None:
    """None when torchcodec can decode here; otherwise why it cannot."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a failed dlopen surfaces as RuntimeError or OSError
        return f"{type(error).__name__}: {error}"
    return None


@functools.cache
def _warn_fallback(reason: str) -> None:
    warnings.warn(
        "torchcodec cannot load FFmpeg's shared libraries, so eva decodes with the slower PyAV "
        f"fallback ({reason.splitlines()[0][:200]}). For the fast path install FFmpeg 4-7 "
        "(Debian/Ubuntu: `apt-get install ffmpeg`; conda: `conda install ffmpeg`).",
        RuntimeWarning,
        stacklevel=3,
    )


def resolve_backend(backend: Backend) -> Literal["torchcodec", "pyav"]:
    """The backend to use: "auto" prefers torchcodec and falls back to PyAV with one warning."""
    if backend == "pyav":
        return "pyav"
    status = torchcodec_status()
    if status is None:
        return "torchcodec"
    if backend == "torchcodec":
        raise RuntimeError(f"torchcodec was requested but cannot be used: {status}")
    _warn_fallback(status)
    return "pyav"


def preload(backend: Backend = "auto") -> Literal["torchcodec", "pyav"]:
    """Import the decoding library now and return the backend it resolves to.

    The first video a process opens otherwise pays torchcodec's import (its FFmpeg ops pull in
    `torch._dynamo`: 7-10 s measured on a quiet machine) inside whatever is being timed; evaluation runs
    call this before their first item. Safe from several threads (the import lock serialises them).
    """
    return resolve_backend(backend)


def open_decoder(source: LoadedSource, backend: Backend = "auto") -> Decoder:
    """Open one decoder on a loaded source.

    Raises:
        FrameToolError: the source is not a readable video (reason says why).
    """
    if resolve_backend(backend) == "torchcodec":
        return TorchCodecDecoder(source)
    return PyAVDecoder(source)


class TorchCodecDecoder:
    """torchcodec's VideoDecoder in exact seek mode (it scans packets once at open)."""

    def __init__(self, source: LoadedSource):
        from torchcodec.decoders import VideoDecoder

        self._source = source
        try:
            self._decoder = VideoDecoder(source.for_decoder(), seek_mode="exact", num_ffmpeg_threads=1)
            meta = self._decoder.metadata
            self.info = VideoInfo(
                begin=float(meta.begin_stream_seconds),
                end=float(meta.end_stream_seconds),
                width=int(meta.width),
                height=int(meta.height),
                # torchcodec's own average_fps is frames / scanned duration, and its header
                # figure is FFmpeg's guessed rate: neither is the avg_frame_rate decord uses.
                fps=average_fps(header_frame_rate(source), int(meta.num_frames or 0),
                                float(meta.end_stream_seconds) - float(meta.begin_stream_seconds)),
                num_frames=int(meta.num_frames or 0),
                codec=str(meta.codec),
            )
        except FrameToolError:
            raise
        except Exception as error:  # noqa: BLE001 - torchcodec raises RuntimeError/ValueError
            raise classify_unreadable(source, error) from error

    def frames_at(self, indices: list[int]) -> DecodedFrames:
        return self._batch(self._decoder.get_frames_at, indices)

    def frames_played_at(self, seconds: list[float]) -> DecodedFrames:
        return self._batch(self._decoder.get_frames_played_at, seconds)

    def _batch(self, get: Callable[[list], Any], keys: list) -> DecodedFrames:
        """`get(keys)` (a torchcodec batch getter), its errors classified as the tool's."""
        try:
            batch = get(keys)
        except Exception as error:  # noqa: BLE001
            raise classify_unreadable(self._source, error) from error
        return DecodedFrames(data=batch.data, pts=batch.pts_seconds.tolist())


class PyAVDecoder:
    """Decodes with PyAV: an exact packet index at open, then seek-to-keyframe and decode forward."""

    def __init__(self, source: LoadedSource):
        self._source = source
        try:
            self._container = source.open_pyav()
            if not self._container.streams.video:
                raise classify_unreadable(source, ValueError("no video stream"))
            self._stream = self._container.streams.video[0]
            self._index_packets()
        except FrameToolError:
            raise
        except Exception as error:  # noqa: BLE001 - av.error.* and ValueError
            raise classify_unreadable(source, error) from error
        self._frames = None  # the live decode iterator after the last seek
        self._last_pts: int | None = None

    def _index_packets(self) -> None:
        stream = self._stream
        entries = []
        for packet in self._container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            entries.append((packet.pts, packet.duration or 0, packet.is_keyframe))
        entries.sort()
        if not entries:
            raise ValueError("no video packets")
        tb = stream.time_base
        self._pts = [p for p, _, _ in entries]
        # Seconds as pts * num / den, divided last: the correctly rounded value torchcodec compares.
        self._pts_seconds = [p * tb.numerator / tb.denominator for p in self._pts]
        self._keyframes = [p for p, _, key in entries if key] or [self._pts[0]]
        codec = stream.codec_context
        end = max(p + d for p, d, _ in entries) * tb.numerator / tb.denominator
        self.info = VideoInfo(
            begin=self._pts_seconds[0],
            end=end,
            width=int(codec.width),
            height=int(codec.height),
            fps=average_fps(stream.average_rate, len(entries), end - self._pts_seconds[0]),
            num_frames=len(entries),
            codec=str(codec.name),
        )

    def _seek_to_keyframe_before(self, pts: int) -> None:
        key = self._keyframes[max(0, bisect.bisect_right(self._keyframes, pts) - 1)]
        self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._last_pts = None

    def _decode_pts(self, target: int) -> torch.Tensor:
        key = self._keyframes[max(0, bisect.bisect_right(self._keyframes, target) - 1)]
        # Decode forward from where we are unless the target is behind us or a keyframe lies
        # between us and it (seeking there is then cheaper than decoding through).
        if self._frames is None or self._last_pts is None or self._last_pts >= target or key > self._last_pts:
            self._seek_to_keyframe_before(target)
        for frame in self._frames:
            if frame.pts is None:
                continue
            self._last_pts = frame.pts
            if frame.pts >= target:
                # > happens only when the target frame is missing from a damaged stream.
                return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        raise ValueError(f"stream ended before pts {target}")

    def frames_at(self, indices: list[int]) -> DecodedFrames:
        for i in indices:
            if not 0 <= i < len(self._pts):
                raise IndexError(f"frame index {i} outside [0, {len(self._pts) - 1}]")
        return self._decode_targets([self._pts[i] for i in indices])

    def frames_played_at(self, seconds: list[float]) -> DecodedFrames:
        targets = []
        for t in seconds:
            i = bisect.bisect_right(self._pts_seconds, t) - 1
            targets.append(self._pts[min(max(i, 0), len(self._pts) - 1)])
        return self._decode_targets(targets)

    def _decode_targets(self, targets: list[int]) -> DecodedFrames:
        """Frames with the given presentation times (stream time-base units), in order asked."""
        decoded: dict[int, torch.Tensor] = {}
        try:
            for target in sorted(set(targets)):
                decoded[target] = self._decode_pts(target)
        except Exception as error:  # noqa: BLE001
            self._frames = None
            raise classify_unreadable(self._source, error) from error
        data = torch.stack([decoded[p] for p in targets]) if targets else torch.empty(0, 3, self.info.height, self.info.width, dtype=torch.uint8)
        seconds_of = dict(zip(self._pts, self._pts_seconds, strict=True))
        return DecodedFrames(data=data, pts=[seconds_of[p] for p in targets])
