"""AnyText's text inputs (Tuo et al. 2023, "AnyText: Multilingual Visual Text Generation and Editing"): text lines,
their positions, the glyph image, the position mask and each line's own rendering, drawn in the world font.

A text line is its text and a quadrilateral (4 points, clockwise from the top left, pixels with pixel centres at
integer coordinates, as OpenCV and the world renderer draw): the line's frame. The
text is fitted into the frame (the largest font cell that holds the line with half a cell of margin, centred), so a
world glyph render's ``attrs.lines`` polygon (half a cell around the glyph cells) gives back its glyph image exactly.
From the lines:

- the glyph image (AnyText's ``glyphs``): every line's text drawn at ``glyph_scale`` x the image resolution (the
  paper draws glyphs at 2x: 1024 px for a 512-px image), 1 = ink;
- the position mask (``positions``): every frame filled, at the image resolution;
- each line's own image (``gly_line``, the recognizer's input for the text embedding): the text alone, unrotated,
  fitted into a ``LINE_H x LINE_W`` canvas (AnyText: 80 x 512 for a 48 x 320 recognizer), white on black.

``tailor generate --text CAT --text-box x0,y0,x1,y1`` (repeatable, paired in order) gives axis-aligned frames.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from tailor.errors import InputError
from tailor.world.font import GLYPH_H, check_text, text_cells, text_width

#: the recognizer's input size (height, width): a line of up to 12 characters at 2 px per font cell
LINE_H, LINE_W = 24, 96
#: the placeholder word each text line's embedding replaces in the prompt (AnyText's ``*``)
PLACEHOLDER = "*"
_SS = 4  # supersampling of the text coverage


@dataclass(frozen=True)
class TextLine:
    """One line: upper-case text and its frame (4x2 float, pixels, clockwise from the top left)."""

    text: str
    polygon: np.ndarray

    @property
    def frame(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(origin, unit x axis, width, height) of the frame (origin = first point)."""
        p = np.asarray(self.polygon, np.float64)
        ex, ey = p[1] - p[0], p[3] - p[0]
        w, h = float(np.hypot(*ex)), float(np.hypot(*ey))
        return p[0], ex / max(w, 1e-9), w, h


def fit_cell(text: str, width: float, height: float) -> float:
    """The largest font cell (pixels) holding ``text`` in a width x height frame with half a cell of margin."""
    return min(width / (text_width(text) + 1.0), height / (GLYPH_H + 1.0))


def text_coverage(line: TextLine, height: int, width: int, scale: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage (float32 HxW in [0, 1]) of ``line``'s text fitted into its frame, the frame scaled by
    ``scale`` (the glyph image's resolution over the image's)."""
    origin, ux, w, h = line.frame
    uy = np.array([-ux[1], ux[0]])  # y axis: x rotated by +90 degrees (image y points down)
    cell = fit_cell(line.text, w, h)
    cells = text_cells(line.text).astype(np.float64)
    if not len(cells) or cell <= 0:
        return np.zeros((height, width), np.float32)
    # the glyph block's top-left inside the frame: centred
    x0 = (w - text_width(line.text) * cell) / 2.0
    y0 = (h - GLYPH_H * cell) / 2.0
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    local = (cells[:, None, :] + sq[None]) * cell + (x0, y0)  # (N, 4, 2) frame coordinates
    pts = origin + local[..., :1] * ux + local[..., 1:] * uy
    pts = pts * scale
    hi = np.zeros((height * _SS, width * _SS), np.uint8)
    # pixel centres sit at integer coordinates (OpenCV's and the world renderer's convention)
    fixed = [np.round((p * _SS + (_SS - 1) / 2.0) * 16).astype(np.int32).reshape(-1, 1, 2) for p in pts]
    cv2.fillPoly(hi, fixed, 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(hi, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def glyph_image(lines: list[TextLine], height: int, width: int, scale: int = 2) -> np.ndarray:
    """Every line's text at ``scale`` x the image size (float32 (scale H)x(scale W), 1 = ink)."""
    out = np.zeros((height * scale, width * scale), np.float32)
    for line in lines:
        out = np.maximum(out, text_coverage(line, height * scale, width * scale, float(scale)))
    return out


def position_mask(lines: list[TextLine], height: int, width: int) -> np.ndarray:
    """Every line's frame filled (float32 HxW in {0, 1})."""
    out = np.zeros((height, width), np.uint8)
    for line in lines:
        pts = np.round(np.asarray(line.polygon) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(np.float32)


def line_image(text: str, height: int = LINE_H, width: int = LINE_W) -> np.ndarray:
    """The text alone, unrotated, fitted into a height x width canvas (float32, 1 = ink): AnyText's ``gly_line``."""
    frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    # fit the line's natural frame (text width + 1 cells by 8 cells) into the canvas, centred
    cell = fit_cell(text, width, height)
    w, h = (text_width(text) + 1.0) * cell, (GLYPH_H + 1.0) * cell
    ox, oy = (width - w) / 2.0, (height - h) / 2.0
    frame = np.array([[ox, oy], [ox + w, oy], [ox + w, oy + h], [ox, oy + h]])
    return text_coverage(TextLine(text, frame), height, width)


# --------------------------------------------------------------------- inputs
def parse_box(value: str, index: int) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1`` (pixels) -> floats; one sentence on anything else."""
    parts = [p.strip() for p in str(value).split(",")]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InputError(
            f"--text-box {value!r} (line {index + 1}) is not x0,y0,x1,y1 in pixels; write for example 8,20,56,44."
        )
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"--text-box {value!r} (line {index + 1}) is empty: x1 must exceed x0 and y1 exceed y0.")
    return box


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)


def parse_lines(texts, boxes, width: int, height: int) -> list[TextLine]:
    """The lines of ``--text`` / ``--text-box`` values (paired in order), checked: characters the font draws, boxes
    inside the image, no two boxes overlapping."""
    texts, boxes = [str(t) for t in _as_list(texts)], _as_list(boxes)
    if not texts:
        raise InputError("anytext needs at least one --text line; pass --text WORD --text-box x0,y0,x1,y1.")
    if len(boxes) != len(texts):
        raise InputError(
            f"{len(texts)} --text line(s) but {len(boxes)} --text-box value(s); give one box per line, in order."
        )
    lines, rects = [], []
    for i, (text, value) in enumerate(zip(texts, boxes)):
        text = check_text(text, "--text")
        x0, y0, x1, y1 = value if isinstance(value, tuple) else parse_box(value, i)
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InputError(
                f"--text-box {x0:g},{y0:g},{x1:g},{y1:g} for {text!r} lies outside the {width}x{height} image; "
                f"keep 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}."
            )
        for j, (a0, b0, a1, b1) in enumerate(rects):
            if min(x1, a1) > max(x0, a0) and min(y1, b1) > max(y0, b0):
                raise InputError(
                    f"--text-box {x0:g},{y0:g},{x1:g},{y1:g} for {text!r} overlaps the box of line {j + 1} "
                    f"({texts[j]!r}); give each line its own area."
                )
        rects.append((x0, y0, x1, y1))
        lines.append(TextLine(text, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)))
    return lines


def lines_of_attrs(attrs) -> list[TextLine]:
    """The lines of a world glyph render's ``attrs`` (none for other renders)."""
    if not isinstance(attrs, dict):
        return []
    return [TextLine(str(r["text"]).upper(), np.asarray(r["polygon"], np.float64)) for r in attrs.get("lines") or []]


def placeholder_prompt(prompt: str, texts: list[str]) -> tuple[str, int]:
    """The prompt with each quoted line text (``"CAT"``) replaced by the placeholder, and how many placeholders it
    then holds (AnyText writes the texts as ``*`` in the caption and puts each line's embedding there)."""
    wanted = {t.upper() for t in texts}

    def swap(m: re.Match) -> str:
        return f" {PLACEHOLDER} " if m.group(1).strip().upper() in wanted else m.group(0)

    out = re.sub(r'"([^"]*)"', swap, prompt)
    out = re.sub(r"\s+", " ", out).strip()
    return out, len(re.findall(rf"(?<!\S){re.escape(PLACEHOLDER)}(?!\S)", out))
