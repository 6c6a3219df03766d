"""Thumbnails of the frames a run's model looked at, decoded again from the recorded times.

Records keep no pixels, only each view's effective window and frame count (`outcomes`). Since
the frame tool's sample times depend on the window and count alone, calling `frame_select` with
the same window and count (no budget, a small resize) decodes the same frames; the labels are
checked against the record, and a view whose video is gone or gives other labels gets no
thumbnails rather than wrong ones. Thumbnails are small JPEG data URLs for a self-contained page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from eva_core.errors import FrameToolError
from eva_core.frame_select import frame_select
from eva_core.reader import open_video
from PIL import Image

THUMB_HEIGHT = 72  # pixels: the timeline shows them 112 px wide (`svg.THUMB_WIDTH`), about this high
JPEG_QUALITY = 70


def jpeg_data_url(frame, height: int = THUMB_HEIGHT) -> str:
    """A `data:image/jpeg;base64,...` URL of a uint8 [3, H, W] frame scaled to `height` pixels."""
    array = frame.permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(array)
    width = max(1, round(image.width * height / image.height))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def view_thumbnails(video: str, view: dict[str, Any], height: int = THUMB_HEIGHT) -> list[str] | None:
    """Data URLs of one view's frames, or None when the video cannot reproduce them."""
    effective = view.get("effective") or {}
    try:
        reader = open_video(video)
        h = reader.info.height
        n = int(effective["nframes"])
        selection = frame_select(reader, start_time=effective["start_time"], end_time=effective["end_time"],
                                 nframes=n, resize=min(1.0, max(height, 28) / h), budget=None, max_nframes=n)
    except (FrameToolError, KeyError, TypeError, ValueError):
        return None
    if selection.labels != list(view.get("labels", [])):
        return None
    return [jpeg_data_url(frame, height) for frame in selection.frames.unbind(0)]


def record_thumbnails(video: str | None, views: Sequence[dict[str, Any]],
                      height: int = THUMB_HEIGHT) -> list[list[str] | None]:
    """Thumbnails per view of one record (None for a view that could not be reproduced)."""
    if video is None:
        return [None for _ in views]
    return [view_thumbnails(video, view, height) for view in views]
