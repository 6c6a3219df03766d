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


THUMB_WIDTH = 112  # px on the page: readable, and 6 side by side fill the 760 px timeline
THUMB_GAP = 4


def spread(wanted: Sequence[float], *, size: float, gap: float, low: float, high: float) -> list[float]:
    """Left edges for boxes of `size` as near their `wanted` left edges as they can be, in the
    same order, never overlapping (at least `gap` apart) and inside [low, high].

    One sweep pushes each box right past its left neighbour, a second pushes it left of its
    right neighbour and of `high`; the caller guarantees the boxes fit:
    len(wanted) * (size + gap) - gap <= high - low.
    """
    out: list[float] = []
    for w in wanted:
        out.append(max(w, low, out[-1] + size + gap) if out else max(w, low))
    right = high
    for i in range(len(out) - 1, -1, -1):
        out[i] = min(out[i], right - size)
        right = out[i] - gap
    return out


def timeline(duration: float, views: Sequence[dict], thumbnails: Sequence[Sequence[str] | None], *,
             width: int = 760, thumb_width: int = THUMB_WIDTH) -> str:
    """The video's timeline with, per view (tool call), its window, a tick per frame at its sample
    time, and the frames' thumbnails below, each joined to its tick (one block per view,
    coloured by turn).

    Thumbnails are `thumb_width` px wide and never overlap: in time order, as close under their
    ticks as the row allows, wrapping onto further rows when a view has more frames than fit
    side by side (drawn exactly at their times, close frames would shrink to a few pixels and the
    first and last would cover their neighbours).

    Args:
        duration: the video's length in seconds.
        views: `ResultRecord.views` entries (turn, effective window, sample_times, labels,
            frame_size as [height, width]).
        thumbnails: data URLs per view, or None for a view without thumbnails.
    """
    duration = max(duration, 1e-6)
    left, right, axis_h = 18, 18, 24
    pw = width - left - right
    per_row = max(1, int((pw + THUMB_GAP) // (thumb_width + THUMB_GAP)))

    def x(t: float) -> float:
        return left + pw * min(max(t / duration, 0.0), 1.0)

    parts = [f'<line x1="{left}" y1="12" x2="{left + pw}" y2="12" stroke="#333" stroke-width="2"/>']
    for t in nice_ticks(duration, 8):
        if t <= duration:
            parts.append(f'<line x1="{x(t):.1f}" y1="8" x2="{x(t):.1f}" y2="16" stroke="#333"/>'
                         f'<text x="{x(t):.1f}" y="23" font-size="9" text-anchor="middle">{_mmss(t)}</text>')
    y0 = axis_h
    for view, thumbs in zip(views, thumbnails, strict=True):
        colour = TURN_COLOURS[int(view.get("turn", 0)) % len(TURN_COLOURS)]
        eff = view.get("effective") or {}
        start, end = float(eff.get("start_time", 0.0)), float(eff.get("end_time", duration))
        parts.append(f'<rect class="window" x="{x(start):.1f}" y="{y0 + 2}" width="{max(1.0, x(end) - x(start)):.1f}" '
                     f'height="6" fill="{colour}" opacity="0.35"><title>turn {int(view.get("turn", 0)) + 1}: '
                     f'{start:.1f}-{end:.1f} s</title></rect>')
        times = view.get("sample_times", [])
        labels = view.get("labels", [])
        for i, t in enumerate(times):
            parts.append(f'<line class="tick" x1="{x(t):.1f}" y1="{y0}" x2="{x(t):.1f}" y2="{y0 + 10}" '
                         f'stroke="{colour}" stroke-width="2"><title>{escape(str(labels[i]) if i < len(labels) else "")} '
                         f'({t:.2f} s)</title></line>')
        block = 14
        if thumbs:
            frame_size = view.get("frame_size") or [3, 4]
            th = round(thumb_width * frame_size[0] / max(1, frame_size[1]))
            row_h = th + 16
            for r in range(0, len(times), per_row):
                row = list(range(r, min(r + per_row, len(times))))
                top = y0 + block + 8 + (r // per_row) * row_h
                edges = spread([x(times[i]) - thumb_width / 2 for i in row], size=thumb_width, gap=THUMB_GAP,
                               low=left, high=left + pw)
                for i, cx in zip(row, edges, strict=True):
                    if r == 0:  # a line from the tick; later rows would cross the first (their labels say when)
                        parts.append(f'<line x1="{x(times[i]):.1f}" y1="{y0 + 10}" x2="{cx + thumb_width / 2:.1f}" '
                                     f'y2="{top}" stroke="{colour}" opacity="0.35"/>')
                    parts.append(f'<image class="thumb" href="{thumbs[i]}" x="{cx:.1f}" y="{top}" '
                                 f'width="{thumb_width}" height="{th}" preserveAspectRatio="xMidYMid meet"/>'
                                 f'<text x="{cx + thumb_width / 2:.1f}" y="{top + th + 11}" font-size="10" '
                                 f'text-anchor="middle">{escape(str(labels[i]) if i < len(labels) else "")}</text>')
            block += 8 + -(-len(times) // per_row) * row_h
        y0 += block + 6
    return (f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y0 + 4}" '
            f'viewBox="0 0 {width} {y0 + 4}">' + "".join(parts) + "</svg>")
