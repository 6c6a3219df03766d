"""Typed errors of the frame tool.

Every failure of `frame_select` is a `FrameToolError` carrying a `ToolErrorReason`. The agent
loop turns the reason into an episode stop reason (`tool_error:<reason>`), so bad input ends
an episode cleanly instead of crashing it.
"""

from __future__ import annotations

from enum import StrEnum


class ToolErrorReason(StrEnum):
    """Why a frame_select call failed. Values are stable strings written into episode records."""

    MISSING_FILE = "missing_file"
    """The path does not exist or is not a regular file."""
    EMPTY_FILE = "empty_file"
    """Zero bytes."""
    NOT_A_VIDEO = "not_a_video"
    """No media container could be recognised in the bytes."""
    NO_VIDEO_STREAM = "no_video_stream"
    """A media file without a video stream, such as an audio-only file."""
    CORRUPT_VIDEO = "corrupt_video"
    """A recognised container that is truncated or damaged: it does not open or decode."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """Times that are NaN, infinite or not numbers; nframes <= 0; resize <= 0, NaN or infinite."""
    DECODE_TIMEOUT = "decode_timeout"
    """Decoding did not finish within the tool's time limit."""


class FrameToolError(Exception):
    """A frame_select failure with a machine-readable reason.

    Args:
        reason: what went wrong, as a `ToolErrorReason`.
        message: a sentence for people: what was asked and what was found.
    """

    def __init__(self, reason: ToolErrorReason, message: str):
        super().__init__(f"[{reason.value}] {message}")
        self.reason = reason
        self.message = message
