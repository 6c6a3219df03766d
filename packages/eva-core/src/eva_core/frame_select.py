"""The frame_select tool: the agent's only way to see the video.

Follows the released EVA tool to the letter (docs/protocol.md, "The frame tool" and
"Visual-token budget") so the released checkpoint sees the same pixels: the same window
clamping, sample times, frame for each time (the decord rule, `frame_indices`), resize rule
and budget fallback. The frame "played at" each time, the released tool's torchcodec
fallback, is available as `frame_rule="played_at"`. What differs is how: in-process
decoding with torchcodec on a pool of decoders instead of a subprocess per call that writes
PNG files, and typed errors instead of crashes.

Two additions on top of the protocol, both flagged in the result: `nframes` above
`max_nframes` is capped (the released tool would try to decode them all), and arguments that
are not finite numbers raise `FrameToolError(INVALID_ARGUMENTS)`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

import torch

from eva_core.decoders import Backend
from eva_core.errors import FrameToolError, ToolErrorReason
from eva_core.reader import DEFAULT_WORKERS, VideoReader, open_video
from eva_core.resize import PATCH, protocol_side
from eva_core.video import VideoInfo, VideoSource

DEFAULT_BUDGET = 12000  # visual tokens per call (docs/protocol.md, "Visual-token budget")
DEFAULT_MAXP = 720  # short side cap applied first when over budget (same section)
DEFAULT_MAX_NFRAMES = 256  # ours: the released tool had no cap

FrameRule = Literal["rounded_index", "played_at"]
"""Which frame a sample time names: "rounded_index", frame int(round(t * average_fps)) (the
released tool's decord path, the default), or "played_at", the last frame presented at or
before t (its torchcodec fallback; often one frame earlier)."""
FRAME_RULES: tuple[FrameRule, ...] = ("rounded_index", "played_at")
DEFAULT_FRAME_RULE: FrameRule = "rounded_index"  # docs/protocol.md, "The frame tool"


@dataclass(frozen=True)
class ToolArgs:
    """frame_select arguments, as the tool schema names them."""

    start_time: float
    end_time: float
    nframes: int
    resize: float = 1.0


@dataclass(frozen=True)
class Budget:
    """The per-call visual-token budget (protocol defaults)."""

    max_tokens: int = DEFAULT_BUDGET
    maxp: int = DEFAULT_MAXP


def tokens_per_frame(height: int, width: int, resize: float) -> int:
    """max(1, round(h * resize / 28)) * max(1, round(w * resize / 28))."""
    return max(1, round(height * resize / PATCH)) * max(1, round(width * resize / PATCH))


def token_estimate(nframes: int, height: int, width: int, resize: float) -> int:
    """estimate = nframes * tokens_per_frame(h, w, resize), h and w the original frame size."""
    return nframes * tokens_per_frame(height, width, resize)


def apply_budget(nframes: int, resize: float, height: int, width: int, budget: Budget) -> tuple[int, float, bool, bool]:
    """The protocol's budget fallback.

    Over budget: first cap resize at maxp / min(h, w); if still over, scale both by
    r = (budget / estimate) ** (1/3): nframes = max(1, int(nframes * r)), resize = resize * r.

    Returns:
        (nframes, resize, resize_capped, scaled).
    """
    if token_estimate(nframes, height, width, resize) <= budget.max_tokens:
        return nframes, resize, False, False
    capped = False
    cap = budget.maxp / min(height, width)
    if resize > cap:
        resize, capped = cap, True
    estimate = token_estimate(nframes, height, width, resize)
    if estimate <= budget.max_tokens:
        return nframes, resize, capped, False
    r = (budget.max_tokens / estimate) ** (1 / 3)
    return max(1, int(nframes * r)), resize * r, capped, True


def clamp_window(start: float, end: float, duration: float) -> tuple[float, float, bool, bool]:
    """Clamp [start, end] to [0, duration]; an empty or inverted window becomes the whole video.

    Returns:
        (start, end, clamped, fell_back).
    """
    s, e = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    clamped = (s, e) != (start, end)
    if e <= s:
        return 0.0, duration, clamped, True
    return s, e, clamped, False


def sample_times(start: float, end: float, nframes: int) -> list[float]:
    """n == 1: the midpoint; else n evenly spaced times from start to end - eps,
    eps = min(1e-3, (end - start) / (4 n)).

    Computed as `numpy.linspace` computes them (start + i * step, the last time exactly
    end - eps), the released tool's arithmetic to the last bit: a time that lands on a
    half frame rounds the same way.
    """
    if nframes == 1:
        return [(start + end) / 2]
    eps = min(1e-3, (end - start) / (4 * nframes))
    last = max(start, end - eps)
    step = (last - start) / (nframes - 1)
    return [start + i * step for i in range(nframes - 1)] + [last]


def frame_indices(times: list[float], fps: float, num_frames: int) -> list[int]:
    """The released tool's frame for each time (its decord path; docs/protocol.md, "The frame tool"):
    index = int(round(t * fps)), clipped to [0, num_frames - 1].

    Args:
        times: video-time seconds (0 = the first frame; the released tool subtracts the first
            frame's time, as decord numbers timestamps from it).
        fps: the stream's average frame rate (FFmpeg's avg_frame_rate, as decord reports).
        num_frames: frames in the stream.

    Python's round sends halves to even: 1.5 -> 2, 2.5 -> 2. On a variable-frame-rate stream
    the index comes from the average rate, so the frame's own time may lie away from t; that
    is what the released checkpoint saw.
    """
    return [min(max(int(round(t * fps)), 0), num_frames - 1) for t in times]


def shown_seconds(start: float, end: float, nframes: int) -> list[int]:
    """The second shown to the model for frame i: int(start + i * (end - start) / max(1, n - 1))."""
    return [int(start + i * (end - start) / max(1, nframes - 1)) for i in range(nframes)]


def format_label(second: int) -> str:
    """[mm:ss] as the tool turn prints it."""
    return f"{second // 60:02d}:{second % 60:02d}"


@dataclass(frozen=True)
class FrameSelection:
    """What one frame_select call returns.

    Attributes:
        frames: uint8 [N, 3, H', W'], RGB, resized to the protocol's multiples of 28.
        requested: the arguments as asked.
        effective: the arguments used, after clamping, capping and the budget fallback.
        sample_times: video-time seconds sampled (0 = first frame).
        decode_pts: presentation time of each returned frame, stream seconds.
        frame_rule: which frame each sample time named (`FrameRule`).
        shown: the second printed to the model for each frame.
        tokens_per_frame: visual tokens of one frame at the effective size.
        info: the video's stream facts.
        window_clamped: a time lay outside the video and was clamped.
        window_fallback: the window was empty or inverted; the whole video was used.
        nframes_capped: nframes exceeded max_nframes.
        budget_resize_capped: over budget, resize was first capped at maxp / min(h, w).
        budget_scaled: over budget, nframes and resize were scaled down.
    """

    frames: torch.Tensor
    requested: ToolArgs
    effective: ToolArgs
    sample_times: list[float]
    decode_pts: list[float]
    frame_rule: FrameRule
    shown: list[int]
    tokens_per_frame: int
    info: VideoInfo
    window_clamped: bool = False
    window_fallback: bool = False
    nframes_capped: bool = False
    budget_resize_capped: bool = False
    budget_scaled: bool = False
    flags: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        names = ("window_clamped", "window_fallback", "nframes_capped", "budget_resize_capped", "budget_scaled")
        object.__setattr__(self, "flags", tuple(n for n in names if getattr(self, n)))

    @property
    def labels(self) -> list[str]:
        return [format_label(s) for s in self.shown]

    @property
    def visual_tokens(self) -> int:
        return self.tokens_per_frame * len(self.shown)


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FrameToolError(ToolErrorReason.INVALID_ARGUMENTS, f"{name} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise FrameToolError(ToolErrorReason.INVALID_ARGUMENTS, f"{name} must be finite, got {value!r}")
    return x


def validate_args(start_time: object, end_time: object, nframes: object, resize: object) -> ToolArgs:
    """Type- and range-check raw arguments (as a model wrote them) into `ToolArgs`.

    Raises:
        FrameToolError: INVALID_ARGUMENTS, naming the argument.
    """
    start, end, scale = _real("start_time", start_time), _real("end_time", end_time), _real("resize", resize)
    n = _real("nframes", nframes)
    if n != int(n):
        raise FrameToolError(ToolErrorReason.INVALID_ARGUMENTS, f"nframes must be an integer, got {nframes!r}")
    if n <= 0:
        raise FrameToolError(ToolErrorReason.INVALID_ARGUMENTS, f"nframes must be positive, got {nframes!r}")
    if scale <= 0:
        raise FrameToolError(ToolErrorReason.INVALID_ARGUMENTS, f"resize must be positive, got {resize!r}")
    return ToolArgs(start_time=start, end_time=end, nframes=int(min(n, 2**31)), resize=scale)


def frame_select(
    video: VideoSource | VideoReader,
    *,
    start_time: float,
    end_time: float,
    nframes: int,
    resize: float = 1.0,
    budget: Budget | None = Budget(),
    max_nframes: int = DEFAULT_MAX_NFRAMES,
    backend: Backend = "auto",
    workers: int = DEFAULT_WORKERS,
    frame_rule: FrameRule = DEFAULT_FRAME_RULE,
) -> FrameSelection:
    """Select `nframes` frames from [start_time, end_time] of `video`, resized by `resize`.

    Args:
        video: a path, bytes, binary file-like object, or an open `VideoReader`.
        start_time, end_time: window in seconds from the first frame.
        nframes: frames to sample.
        resize: scale factor on both sides.
        budget: per-call visual-token budget; None disables the fallback.
        max_nframes: cap on nframes (flagged when applied).
        backend, workers: decoding backend and decoders per call (see `VideoReader`).
        frame_rule: "rounded_index" (the released tool's decord rule, default) or "played_at".

    Raises:
        FrameToolError: bad arguments or an unreadable video; `.reason` says which.
    """
    requested = validate_args(start_time, end_time, nframes, resize)
    if frame_rule not in FRAME_RULES:
        raise ValueError(f"frame_rule must be one of {FRAME_RULES}, got {frame_rule!r}")
    reader = open_video(video, backend=backend, workers=workers)
    info = reader.info
    h, w = info.height, info.width

    start, end, clamped, fell_back = clamp_window(requested.start_time, requested.end_time, info.duration)
    n, scale = min(requested.nframes, max_nframes), requested.resize
    capped_n = n < requested.nframes
    resize_capped = scaled = False
    if budget is not None:
        n, scale, resize_capped, scaled = apply_budget(n, scale, h, w, budget)

    times = sample_times(start, end, n)
    size = (protocol_side(h, scale), protocol_side(w, scale))
    if frame_rule == "rounded_index":
        decoded = reader.frames_at(frame_indices(times, info.fps, info.num_frames), size=size)
    else:
        decoded = reader.frames_played_at([info.begin + t for t in times], size=size)
    return FrameSelection(
        frames=decoded.data,
        requested=requested,
        effective=ToolArgs(start_time=start, end_time=end, nframes=n, resize=scale),
        sample_times=times,
        decode_pts=decoded.pts,
        frame_rule=frame_rule,
        shown=shown_seconds(start, end, n),
        tokens_per_frame=tokens_per_frame(h, w, scale),
        info=info,
        window_clamped=clamped,
        window_fallback=fell_back,
        nframes_capped=capped_n,
        budget_resize_capped=resize_capped,
        budget_scaled=scaled,
    )
