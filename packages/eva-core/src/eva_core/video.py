"""Video sources, stream facts, and the classification of files that cannot be read.

A source is a path, bytes, or a binary file-like object (WebDataset shards hold video
bytes). A file-like object is read once into bytes, so that several decoders can read it at
once without sharing a file position.

Times: the tool speaks in *video time*, seconds from the first frame. A stream whose first
frame is presented at t0 != 0 (common in cut or remuxed files) is decoded at `t0 + t`, so
the model's "0 s" is always the first frame, as in the released tool, which indexed frames
from the start of the stream.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from eva_core.errors import FrameToolError, ToolErrorReason

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True)
class VideoInfo:
    """Facts of a video stream, found without decoding a frame (no ffprobe subprocess).

    Attributes:
        begin: presentation time of the first frame, seconds.
        end: end of the last frame (its time plus its duration), seconds.
        width, height: frame size in pixels.
        fps: average frame rate: FFmpeg's `avg_frame_rate` (what decord's `get_avg_fps` reports,
            and so the rate of the released tool's frame-index rule).
        num_frames: frames in the stream.
        codec: codec name, such as "h264".
    """

    begin: float
    end: float
    width: int
    height: int
    fps: float
    num_frames: int
    codec: str

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end."""
        return self.end - self.begin

    def __post_init__(self):
        if self.num_frames <= 0 or self.end <= self.begin:
            raise FrameToolError(ToolErrorReason.CORRUPT_VIDEO, f"stream holds no playable frame: {self}")


@dataclass(frozen=True)
class LoadedSource:
    """A normalised source: a path on disk or the bytes of a whole file."""

    path: Path | None = None
    data: bytes | None = None

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"<{len(self.data or b'')} bytes>"

    def for_decoder(self) -> str | bytes:
        return str(self.path) if self.path is not None else self.data  # type: ignore[return-value]

    def open_pyav(self) -> av.container.InputContainer:
        return av.open(str(self.path)) if self.path is not None else av.open(io.BytesIO(self.data))


def header_frame_rate(source: LoadedSource) -> Fraction | None:
    """FFmpeg's `avg_frame_rate` of the first video stream after probing (None when unset).

    This is the rate decord reports and the released tool's frame-index rule multiplies by;
    torchcodec exposes neither it nor a way to read it, so its decoder asks PyAV (a header
    read, a few ms).
    """
    with source.open_pyav() as container:
        streams = container.streams.video
        return streams[0].average_rate if streams else None


def average_fps(rate: Fraction | None, num_frames: int, duration: float) -> float:
    """The stream's average frame rate: `rate` when set; else frames per second of the scan.

    (decord would fall back to 1 fps where FFmpeg sets no rate; counting frames is closer
    to what such a file holds. Not seen in the benchmarks' files.)
    """
    if rate is not None and rate > 0:
        return float(rate)
    return num_frames / duration if duration > 0 else 0.0


def load_source(source: VideoSource) -> LoadedSource:
    """Check that the source exists and is not empty; read file-like objects into bytes.

    Raises:
        FrameToolError: MISSING_FILE or EMPTY_FILE.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FrameToolError(ToolErrorReason.MISSING_FILE, f"no such video file: {path}")
        if path.stat().st_size == 0:
            raise FrameToolError(ToolErrorReason.EMPTY_FILE, f"video file is empty: {path}")
        return LoadedSource(path=path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise TypeError(f"file-like video sources must be opened in binary mode, got {type(data)}")
    else:
        raise TypeError(f"unsupported video source type: {type(source).__name__}")
    if not data:
        raise FrameToolError(ToolErrorReason.EMPTY_FILE, "video bytes are empty")
    return LoadedSource(data=data)


# Signatures of containers that carry video: a file that starts with one of these but does
# not open or decode is damaged, not "not a video".
_CONTAINER_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x47"),  # MPEG-TS sync byte
)


def _head(source: LoadedSource, n: int = 16) -> bytes:
    if source.data is not None:
        return source.data[:n]
    with open(source.path, "rb") as f:  # type: ignore[arg-type]
        return f.read(n)


def classify_unreadable(source: LoadedSource, error: BaseException) -> FrameToolError:
    """Name why a source that failed to open or decode is unreadable.

    PyAV's demuxer tells a media file without video (audio only) from one it cannot parse;
    for the latter, a known container signature means damage (truncation, corruption),
    anything else means the bytes are not a video at all.
    """
    try:
        with source.open_pyav() as container:
            has_video = len(container.streams.video) > 0
            has_other = len(container.streams) > 0
    except Exception:  # noqa: BLE001 - any demuxer failure means "could not parse"
        head = _head(source)
        damaged = any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)
        reason = ToolErrorReason.CORRUPT_VIDEO if damaged else ToolErrorReason.NOT_A_VIDEO
        return FrameToolError(reason, f"cannot open {source.describe()}: {error}")
    if not has_video:
        what = "audio or data streams only" if has_other else "no streams"
        return FrameToolError(ToolErrorReason.NO_VIDEO_STREAM, f"{source.describe()} has {what}")
    return FrameToolError(ToolErrorReason.CORRUPT_VIDEO, f"cannot decode {source.describe()}: {error}")
