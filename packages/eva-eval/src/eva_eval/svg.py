"""Inline SVG for the HTML report: the accuracy-versus-visual-tokens plot and frame timelines.

Hand-written SVG strings (no plotting library, nothing fetched by the page). Every text that
comes from data (run names, labels) goes through `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

TURN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MODE_COLOURS = {"agent": "#d62728", "uniform": "#1f77b4"}


@dataclass(frozen=True)
class PlotPoint:
    """One run on the plot: x = mean visual tokens per item, y = accuracy %."""

    label: str
    mode: str
    visual_tokens: float
    accuracy: float


def nice_ticks(upper: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `upper`: steps of 1, 2 or 5 times a power of ten."""
    if upper <= 0:
        return [0.0, 1.0]
    raw = upper / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [k * step for k in range(int(math.ceil(upper / step)) + 1)]


def accuracy_plot(points: Sequence[PlotPoint], *, width: int = 640, height: int = 360) -> str:
    """Scatter of accuracy (%) against mean visual tokens per item, one labelled point per run."""
    left, right, top, bottom = 60, 20, 20, 50
    xs = nice_ticks(max([p.visual_tokens for p in points] + [1.0]) * 1.05)
    ys = [0, 20, 40, 60, 80, 100]
    pw, ph = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + pw * v / xs[-1]

    def y(v: float) -> float:
        return top + ph * (1 - v / 100.0)

    parts = [f'<svg id="acc-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="accuracy versus visual tokens">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    for v in xs:
        parts.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{top + ph}" stroke="#e5e5e5"/>'
                     f'<text x="{x(v):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{v:g}</text>')
    for v in ys:
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 10}" font-size="12" text-anchor="middle">'
                 'mean visual tokens per item</text>')
    parts.append(f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2})">accuracy %</text>')
    placed: list[tuple[float, float]] = []
    for p in points:
        colour = MODE_COLOURS.get(p.mode, "#555")
        px, py = x(p.visual_tokens), y(p.accuracy)
        ly = py - 6
        while any(abs(px - qx) < 60 and abs(ly - qy) < 12 for qx, qy in placed):  # labels must not overlap
            ly += 13
        placed.append((px, ly))
        parts.append(f'<g class="point"><circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{colour}" opacity="0.85">'
                     f'<title>{escape(p.label)}: {p.accuracy:.2f} % at {p.visual_tokens:.0f} visual tokens</title>'
                     f'</circle><text x="{px + 8:.1f}" y="{ly:.1f}" font-size="11">{escape(p.label)}</text></g>')
    for k, (mode, colour) in enumerate(MODE_COLOURS.items()):
        parts.append(f'<circle cx="{left + 12}" cy="{top + 14 + 16 * k}" r="5" fill="{colour}"/>'
                     f'<text x="{left + 22}" y="{top + 18 + 16 * k}" font-size="11">{mode}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def timeline(duration: float, views: Sequence[dict], thumbnails: Sequence[Sequence[str] | None], *,
             width: int = 760, thumb_height: int = 40) -> str:
    """The video's timeline with, per view (tool call), its window, a tick per frame at its sample
    time, and the frames' thumbnails placed at their times (one row per view, coloured by turn).

    Args:
        duration: the video's length in seconds.
        views: `ResultRecord.views` entries (turn, effective window, sample_times, labels).
        thumbnails: data URLs per view, or None for a view without thumbnails.
    """
    duration = max(duration, 1e-6)
    left, right, axis_h, row_h = 18, 18, 24, thumb_height + 26
    pw = width - left - right
    height = axis_h + row_h * max(1, len(views)) + 4

    def x(t: float) -> float:
        return left + pw * min(max(t / duration, 0.0), 1.0)

    parts = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<line x1="{left}" y1="12" x2="{left + pw}" y2="12" stroke="#333" stroke-width="2"/>']
    for t in nice_ticks(duration, 8):
        if t <= duration:
            parts.append(f'<line x1="{x(t):.1f}" y1="8" x2="{x(t):.1f}" y2="16" stroke="#333"/>'
                         f'<text x="{x(t):.1f}" y="23" font-size="9" text-anchor="middle">{_mmss(t)}</text>')
    for k, (view, thumbs) in enumerate(zip(views, thumbnails, strict=True)):
        colour = TURN_COLOURS[int(view.get("turn", 0)) % len(TURN_COLOURS)]
        y0 = axis_h + k * row_h
        eff = view.get("effective") or {}
        start, end = float(eff.get("start_time", 0.0)), float(eff.get("end_time", duration))
        parts.append(f'<rect class="window" x="{x(start):.1f}" y="{y0 + 2}" width="{max(1.0, x(end) - x(start)):.1f}" '
                     f'height="6" fill="{colour}" opacity="0.35"><title>turn {int(view.get("turn", 0)) + 1}: '
                     f'{start:.1f}-{end:.1f} s</title></rect>')
        times = view.get("sample_times", [])
        labels = view.get("labels", [])
        slot = pw / max(1, len(times))
        frame_size = view.get("frame_size") or [thumb_height, thumb_height]
        tw = min(thumb_height * frame_size[1] / max(1, frame_size[0]), max(8.0, slot - 2))
        for i, t in enumerate(times):
            tx = x(t)
            parts.append(f'<line class="tick" x1="{tx:.1f}" y1="{y0}" x2="{tx:.1f}" y2="{y0 + 10}" stroke="{colour}" '
                         f'stroke-width="2"><title>{escape(str(labels[i]) if i < len(labels) else "")} '
                         f'({t:.2f} s)</title></line>')
            if thumbs:
                cx = min(max(tx - tw / 2, left), left + pw - tw)
                parts.append(f'<line x1="{tx:.1f}" y1="{y0 + 10}" x2="{cx + tw / 2:.1f}" y2="{y0 + 14}" '
                             f'stroke="{colour}" opacity="0.5"/>'
                             f'<image class="thumb" href="{thumbs[i]}" x="{cx:.1f}" y="{y0 + 14}" width="{tw:.1f}" '
                             f'height="{thumb_height}" preserveAspectRatio="xMidYMid meet"/>')
    parts.append("</svg>")
    return "".join(parts)
