"""The world's own font: 5x7 pixel glyphs for A-Z and 0-9, shipped as data (no system fonts, nothing downloaded).

Each glyph is 7 rows of 5 cells (``#`` on, ``.`` off). :func:`text_polygons` turns a line of text into one
rectangle per lit cell in a unit frame (cell side 1, advance 6 cells per character: 5 + 1 of spacing), which the
glyph renderer maps to pixels and fills anti-aliased, so text is sharp at any scale and slant.
"""

from __future__ import annotations

import functools

import numpy as np

from tailor.errors import ConfigError

GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6

_GLYPHS: dict[str, str] = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": ".###. #.... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ....# .###.",
}
#: every character the font draws (a space is a gap of one advance)
CHARSET: str = "".join(_GLYPHS)


@functools.cache
def glyph_bitmap(ch: str) -> np.ndarray:
    """The 7x5 bool bitmap of ``ch`` (read-only)."""
    rows = _GLYPHS[ch].split()
    bm = np.array([[c == "#" for c in r] for r in rows], bool)
    assert bm.shape == (GLYPH_H, GLYPH_W), ch
    bm.setflags(write=False)
    return bm


def check_text(text: str, option: str = "--text") -> str:
    """``text`` in upper case if the font draws every character of it; else a one-sentence ConfigError."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{option} must be a non-empty word; the font draws {CHARSET} and spaces.")
    up = text.upper()
    bad = sorted({c for c in up if c != " " and c not in _GLYPHS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ConfigError(f"{option} {text!r} has characters the world font lacks ({shown}); use A-Z, 0-9 and spaces.")
    return up


def text_width(text: str) -> int:
    """Width of a line in font cells (no trailing spacing)."""
    return max(0, len(text) * ADVANCE - 1)


def text_cells(text: str) -> np.ndarray:
    """The lit cells of a line as an (N, 2) int array of (column, row) in font cells, left to right."""
    cells = []
    for i, ch in enumerate(text):
        if ch == " ":
            continue
        ys, xs = np.nonzero(glyph_bitmap(ch))
        cells.append(np.stack([xs + i * ADVANCE, ys], 1))
    return np.concatenate(cells) if cells else np.zeros((0, 2), int)


def text_bitmap(text: str) -> np.ndarray:
    """A 7 x text_width bool bitmap of a line (for tests and previews)."""
    out = np.zeros((GLYPH_H, text_width(text)), bool)
    c = text_cells(text)
    out[c[:, 1], c[:, 0]] = True
    return out
