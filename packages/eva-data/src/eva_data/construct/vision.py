"""Pixel reading for the scripted teacher: find the coloured shape in a frame, name its colour and
form, and read its glyph by template matching against the known 5x7 bitmap font.

Only pixels are used, never a video's plan: a frame is whatever `frame_select` returned
(uint8 [3, H, W], already resized by the protocol), so a shape caught at resize 0.25 is found
and its colour named, while its glyph (3 x 2 pixels there) is too small to read, exactly the
limit the synthetic benchmark is built around (`eva_data.synth.glyphs`).

How, with the measured facts it rests on (tests/test_construct_vision.py):
- The background is greyish: the 99th percentile of max(RGB) - min(RGB) stays under 40, and
  the event colours are at least 120 (`eva_data.synth.events.COLOURS`); pixels above
  `SATURATION` belong to a shape. Events never overlap in time, so a frame shows at most one.
- Every shape is convex, so filling each row between its leftmost and rightmost coloured
  pixel gives the shape with its glyph; the glyph's ink is the unsaturated part of that fill.
- The glyph is read by height: every font character has ink in its top and bottom rows, so the
  ink's bounding box gives the glyph's height h (give or take the one or two rows that blur and
  the protocol's resize to multiples of 28 add); each character's `glyph_mask(char, h')` for
  h' in h, h - 1, h - 2 is slid over the box, scored by the pixels it matches less the ink it
  leaves unexplained, per template pixel; the best wins. A read needs h >= `MIN_GLYPH_PX` and a
  score of at least `MIN_AGREEMENT`, else the glyph counts as unreadable. Measured on rendered
  easy and default videos: every glyph at resize 1.0 read right (lowest score 0.72), none at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eva_data.synth.events import COLOURS
from eva_data.synth.glyphs import CHARACTERS, GLYPH_ROWS, glyph_mask

SATURATION = 70  # max(RGB) - min(RGB): background < 40 (99th percentile), shapes >= 120
MIN_SHAPE_FRACTION = 0.001  # of the frame's pixels: 0.25-resized shapes cover ~0.004
MIN_GLYPH_PX = GLYPH_ROWS  # a glyph shorter than the font's rows cannot be told apart
MIN_AGREEMENT = 0.6  # template agreement less unexplained ink, per template pixel: right reads measure >= 0.71
RIM = 2  # pixels at the shape's edge left out of the glyph search: chroma subsampling blurs them
INK_DISTANCE = 110  # RGB distance from the shape's colour: black or white ink is >= 150 away  # fraction of template pixels that agree; right reads measure >= 0.9


@dataclass(frozen=True)
class Sighting:
    """A shape seen in one frame.

    Attributes:
        colour: the nearest name in `COLOURS` to the shape's mean colour.
        shape: "circle", "square", "triangle" or "diamond" (from how it fills its box).
        box: (top, left, bottom, right) in the frame's pixels, bottom/right exclusive.
        frame_size: (H, W) of the frame.
        char: the glyph read, None when it could not be read (too small or unclear).
        glyph_px: the ink's height in pixels (0 when no ink was found).
        agreement: the best template's pixel agreement (0 when none was tried).
    """

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    char: str | None
    glyph_px: int
    agreement: float

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) as fractions of the frame's width and height."""
        top, left, bottom, right = self.box
        h, w = self.frame_size
        return ((left + right) / 2 / w, (top + bottom) / 2 / h)

    def region(self) -> str:
        """Where the shape is, in words: one cell of a 3x3 grid (as the benchmark's references say it)."""
        x, y = self.centre
        row = ("top", "", "bottom")[min(2, int(3 * y))]
        col = ("left", "", "right")[min(2, int(3 * x))]
        return " ".join(w for w in (row, col) if w) or "centre"


def _nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((table - rgb) ** 2).sum(1)))]


def _shape_name(fill: np.ndarray) -> str:
    """Name a convex fill (bool [h, w]) by its row widths w(r), relative to the widest rows (90th
    percentile, so a stray line of chroma bleed barely counts): a square's rows are all about as
    wide, a circle's average pi/4 of the widest, a diamond's and a triangle's half, the triangle
    widest at the bottom and the diamond in the middle."""
    widths = fill.sum(1)[fill.sum(1) > 0].astype(np.float32)
    widest = np.percentile(widths, 90)
    ratio = widths.mean() / widest
    if ratio > 0.9:
        return "square"
    if ratio > 0.66:
        return "circle"
    where = np.nonzero(widths >= 0.9 * widest)[0].mean() / len(widths)
    return "triangle" if where > 0.7 else "diamond"


def read_glyph(ink: np.ndarray) -> tuple[str | None, int, float]:
    """Read a glyph from its ink mask (bool [h, w], the shape's box) by template matching.

    Returns:
        (char or None, the ink's height in pixels, the best agreement).
    """
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        return None, 0, 0.0
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height = int(bottom - top)
    if height < MIN_GLYPH_PX:
        return None, height, 0.0
    band = ink[top:bottom, left:right]
    total = int(band.sum())
    best, best_score = None, 0.0
    for glyph_h in range(height, max(MIN_GLYPH_PX, height - 2) - 1, -1):  # blur and resizing add a row or two
        for char in CHARACTERS:
            template = glyph_mask(char, glyph_h)
            width = template.shape[1]
            # the template may stick out of the ink's box on either side
            padded = np.pad(band, ((0, glyph_h - 1), (width, width)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, template.shape)[:height - glyph_h + 1]
            agree = (windows == template).sum((-2, -1)) - (total - windows.sum((-2, -1)))
            score = float(agree.max()) / template.size  # unexplained ink counts against a template
            if score > best_score:
                best, best_score = char, score
    return (best if best_score >= MIN_AGREEMENT else None), height, best_score


def _erode(mask: np.ndarray, rim: int) -> np.ndarray:
    """`mask` less every pixel within `rim` pixels (square neighbourhood) of its outside or the border."""
    padded = np.pad(mask, rim)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(2 * rim + 1):
        for dx in range(2 * rim + 1):
            out &= padded[dy:dy + h, dx:dx + w]
    return out


def find_shape(frame: torch.Tensor) -> Sighting | None:
    """The coloured shape in a frame, if any (uint8 [3, H, W])."""
    img = frame.permute(1, 2, 0).numpy().astype(np.int16)
    h, w = img.shape[:2]
    saturated = (img.max(-1) - img.min(-1)) > SATURATION
    if saturated.sum() < max(4, MIN_SHAPE_FRACTION * h * w):
        return None
    rows, cols = np.nonzero(saturated)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    box = saturated[top:bottom, left:right]
    fill = np.zeros_like(box)
    for r in range(box.shape[0]):  # convex: fill each row between its outermost coloured pixels
        xs = np.nonzero(box[r])[0]
        if len(xs):
            fill[r, xs[0]:xs[-1] + 1] = True
    mean = img[top:bottom, left:right][box].mean(0)
    colour = _nearest_colour(mean)
    inner = _erode(fill, RIM)
    far = np.sqrt(((img[top:bottom, left:right] - mean) ** 2).sum(-1)) > INK_DISTANCE
    char, glyph_px, agreement = read_glyph(inner & far)
    return Sighting(colour=colour, shape=_shape_name(fill), box=(int(top), int(left), int(bottom), int(right)),
                    frame_size=(h, w), char=char, glyph_px=glyph_px, agreement=agreement)
