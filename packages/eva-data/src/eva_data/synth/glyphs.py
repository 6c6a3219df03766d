"""A 5x7 bitmap font for the characters that events carry, drawn without any font file.

The patterns are those of the classic HD44780 character ROM. Characters that a small font makes
easy to confuse with another (0/O/Q, 1/I) are left out, so a wrong reading at full resolution
is the reader's fault, not the font's. A glyph is scaled by nearest neighbour to any height of
at least 7 px, with crisp strokes 1-2 px wide at the default 12 px. Measured with an ideal
reader that knows the glyph's exact place (tests/test_synth.py), a 12 px glyph is read every
time at resize 1.0, three times in four at 0.5, and about one time in six at 0.25 (chance is
one in 32), where the whole glyph spans 3 x 2 pixels.
"""

from __future__ import annotations

import numpy as np

GLYPH_ROWS, GLYPH_COLS = 7, 5

_PATTERNS: dict[str, tuple[str, ...]] = {
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    "A": ("01110", "10001", "10001", "10001", "11111", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "C": ("01110", "10001", "10000", "10000", "10000", "10001", "01110"),
    "D": ("11100", "10010", "10001", "10001", "10001", "10010", "11100"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "G": ("01110", "10001", "10000", "10111", "10001", "10001", "01111"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "J": ("00111", "00010", "00010", "00010", "00010", "10010", "01100"),
    "K": ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "M": ("10001", "11011", "10101", "10101", "10001", "10001", "10001"),
    "N": ("10001", "10001", "11001", "10101", "10011", "10001", "10001"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    "V": ("10001", "10001", "10001", "10001", "10001", "01010", "00100"),
    "W": ("10001", "10001", "10001", "10101", "10101", "10101", "01010"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    "Y": ("10001", "10001", "10001", "01010", "00100", "00100", "00100"),
    "Z": ("11111", "00001", "00010", "00100", "01000", "10000", "11111"),
}

CHARACTERS = "".join(_PATTERNS)
"""The characters an event may carry: digits 1-9 and 23 capital letters."""


def is_digit(char: str) -> bool:
    return char.isdigit()


def glyph_bits(char: str) -> np.ndarray:
    """bool [7, 5]: the font cell pattern of `char`.

    Raises:
        KeyError: `char` is not in `CHARACTERS`.
    """
    try:
        rows = _PATTERNS[char]
    except KeyError:
        raise KeyError(f"no glyph for {char!r}; the font holds {CHARACTERS}") from None
    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)


def glyph_mask(char: str, height: int) -> np.ndarray:
    """bool [height, round(height * 5 / 7)]: the glyph scaled by nearest neighbour.

    Raises:
        ValueError: `height` is below 7.
    """
    if height < GLYPH_ROWS:
        raise ValueError(f"glyph height must be at least {GLYPH_ROWS}, got {height}")
    width = max(GLYPH_COLS, round(height * GLYPH_COLS / GLYPH_ROWS))
    rows = np.arange(height) * GLYPH_ROWS // height
    cols = np.arange(width) * GLYPH_COLS // width
    return glyph_bits(char)[rows][:, cols]
