"""Pixels and bytes: event sprites drawn over the background, encoded as H.264 in MP4.

Shapes are drawn as exact masks in numpy (no anti-aliasing, no drawing library), and glyphs
come from the bitmap font in `eva_data.synth.glyphs`, so a seed always gives the same pixels.
Encoding uses `eva_core.sample_video.encode_h264` (PyAV's bundled libx264) with one encoder thread
and no rate-control lookahead: x264's output can depend on its thread count, and its lookahead
reads uninitialised stack memory (so the bytes depended on what the process ran before: the
flaky golden of tests/test_seek.py), and same seed must mean same bytes on any machine with the
same libraries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from eva_core.sample_video import encode_h264 as encode_video

from eva_data.synth.events import COLOURS, Event, VideoPlan
from eva_data.synth.glyphs import glyph_mask
from eva_data.synth.scenes import SceneRenderer


def shape_mask(shape: str, size: int) -> np.ndarray:
    """bool [size, size]: the filled shape inside its bounding square.

    Raises:
        ValueError: an unknown shape.
    """
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = x - c, y - c
    if shape == "circle":
        return dx * dx + dy * dy <= c * c
    if shape == "square":
        inset = round(size * 0.08)
        return (x >= inset) & (x < size - inset) & (y >= inset) & (y < size - inset)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= c
    if shape == "triangle":  # apex up, base at the bottom: |dx| <= (y / size) * c
        return np.abs(dx) <= (y + 1) / size * c
    raise ValueError(f"unknown shape {shape!r}")


def glyph_ink(colour: tuple[int, int, int]) -> int:
    """Black glyph on light shapes, white on dark ones (ITU-R BT.601 luma threshold 140)."""
    r, g, b = colour
    return 0 if 0.299 * r + 0.587 * g + 0.114 * b > 140 else 255


def glyph_centre(event: Event) -> tuple[int, int]:
    """(x, y) in the frame where the glyph's centre sits: the shape's centre, lowered for a
    triangle to its widest useful part."""
    cx, cy = event.centre
    return (cx, event.y + round(event.size * 0.64)) if event.shape == "triangle" else (cx, cy)


def event_sprite(event: Event, glyph_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The event as drawn: (rgb uint8 [S, S, 3], mask bool [S, S]), S = event.size."""
    mask = shape_mask(event.shape, event.size)
    colour = COLOURS[event.colour]
    rgb = np.empty((event.size, event.size, 3), np.uint8)
    rgb[...] = colour
    if event.char is not None:
        ink = glyph_mask(event.char, glyph_px)
        gx, gy = glyph_centre(event)
        top, left = gy - event.y - ink.shape[0] // 2, gx - event.x - ink.shape[1] // 2
        region = rgb[top:top + ink.shape[0], left:left + ink.shape[1]]
        region[ink] = glyph_ink(colour)
    return rgb, mask


def render_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] RGB frames of the video, in order."""
    # the cue is on screen (a white window) unless the question names the window instead
    cue = None if plan.cue is None or plan.cue_hint else (round(plan.cue[0] * plan.fps), round(plan.cue[1] * plan.fps))
    scene = SceneRenderer(plan.scene_seed, plan.n_frames, plan.fps, plan.width, plan.height, plan.grain,
                          flat=plan.background == "flat", cue_frames=cue)
    sprites = [event_sprite(e, plan.glyph_px) for e in plan.events]
    spans = [(round(e.start * plan.fps), round(e.end * plan.fps)) for e in plan.events]
    for index in range(plan.n_frames):
        img = scene.frame(index)
        for event, (rgb, mask), (first, stop) in zip(plan.events, sprites, spans, strict=True):
            if first <= index < stop:
                view = img[event.y:event.y + event.size, event.x:event.x + event.size]
                view[mask] = rgb[mask]
        yield img


def encode_h264(frames: Iterable[np.ndarray], *, fps: float, width: int, height: int, gop: int, crf: int,
                preset: str = "veryfast") -> bytes:
    """MP4 bytes of RGB frames, H.264 yuv420p, constant frame rate, no B-frames.

    Args:
        frames: uint8 [H, W, 3] each.
        fps: frame rate; frame i is presented at i / fps.
        width, height: frame size.
        gop: keyframe interval in frames.
        crf: x264 quality.
        preset: x264 speed preset.
    """
    # Same seed, same bytes: one x264 thread, so the bytes do not depend on the machine's core
    # count, and no lookahead, whose motion search reads uninitialised stack memory (valgrind), so
    # the bytes would depend on the process's history (1 video in ~100 differed while another
    # thread allocated; tests/test_synth.py::test_same_bytes_whatever_ran_on_the_stack_before).
    return encode_video(frames, fps=fps, width=width, height=height, gop=gop, crf=crf, preset=preset,
                        threads=1, lookahead=0)


def render_video(plan: VideoPlan) -> bytes:
    """The plan's video as MP4 bytes."""
    gop = max(1, round(plan.gop_seconds * plan.fps))
    return encode_h264(render_frames(plan), fps=plan.fps, width=plan.width, height=plan.height, gop=gop,
                       crf=plan.crf)
