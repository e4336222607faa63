"""Glyphs: a short word on a sign, a plate or an object, drawn with the world's own font (:mod:`tailor.world.font`).

Ground truth for text rendering (AnyText, Tuo et al. 2023): the text, one polygon per line (the quadrilateral
around the line's glyph cells, half a cell of margin, in pixels, clockwise from top-left), the glyph image (the
text's coverage alone, AnyText's glyph condition, ``extras["glyphs"]``) and the surface's mask and box.
Captions quote the text: ``a sign that says "CAT" on brick``.

Glyph cells are at least :data:`MIN_CELL_PX` pixels (3): the smallest size at which the OCR oracle still reads the
words after the shipped world VAE's encode/decode round trip (docs/world_glyphs.md), so a 64-pixel image holds
3 characters and a 128-pixel one 6. Words come from :data:`LEXICON` (60%; those that fit) or are random strings of
2 to 5 characters (40%, at most what fits; a quarter of those mix digits).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.draw import bbox, edges_from_labels, poly_alpha, rotation, unit_polygon
from tailor.world.font import CHARSET, GLYPH_H, check_text, text_cells, text_width
from tailor.world.sample import Sample
from tailor.world.styles import apply_style
from tailor.world.vocab import BACKGROUNDS, COLORS, STYLES, canonical, check_seed, check_size, luminance, make_rng

LEXICON: tuple[str, ...] = (
    "CAT", "DOG", "SUN", "STOP", "OPEN", "EXIT", "SALE", "MILK", "BOOK", "FISH", "BIRD", "TREE", "STAR", "MOON",
    "RAIN", "SNOW", "HOME", "CAFE", "SHOP", "PARK", "GOLD", "BLUE", "RED", "HOT", "ICE", "TOY", "BUS", "CAR", "MAP",
    "BAR", "INN", "ART", "JAZZ", "KING", "LOVE", "HELP", "TAXI", "HOTEL", "PIZZA", "BREAD", "WATER", "ZOO", "GYM",
    "BANK", "FOOD", "WAY", "NO", "YES", "GO", "UP", "ON", "OFF", "WIFI", "BEER", "TEA", "CAKE", "LAMP", "BOX", "KEY",
    "FOX", "OWL", "BEE", "HAT", "WAVE", "ROSE", "MINT", "QUIZ", "VOTE", "JUMP", "WIND", "HILL", "DUCK", "FROG",
)  # fmt: skip
SURFACES: tuple[str, ...] = ("sign", "plate", "object")
#: name -> (board colour, ink colour)
SIGN_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "green": ((28, 112, 62), (245, 245, 238)),
    "blue": ((30, 68, 165), (245, 245, 238)),
    "white": ((240, 240, 234), (24, 24, 24)),
    "yellow": ((246, 202, 40), (22, 22, 22)),
    "red": ((192, 30, 32), (248, 246, 240)),
    "black": ((28, 28, 30), (245, 245, 238)),
}
PLATE_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "silver": ((196, 200, 206), (24, 24, 28)),
    "gold": ((214, 172, 70), (40, 26, 10)),
    "white": ((244, 244, 240), (24, 24, 24)),
    "black": ((30, 30, 32), (240, 240, 236)),
}
OBJECT_SHAPES: tuple[str, ...] = ("square", "circle")
MAX_ROT = 6.0  # degrees
#: the smallest glyph cell in pixels: below it the shipped world VAE's encode/decode (4x down) no longer keeps the
#: strokes readable (docs/world_glyphs.md); a sharper VAE may lower it (2 px keeps 4 characters in 64 px)
MIN_CELL_PX = 3.0
MAX_CELL = 3.6 / 64  # the largest glyph cell as a fraction of the image side
PAD = {"sign": 1.0, "plate": 1.0, "object": 0.6}  # margin around the text, in cells
N_TEMPLATES = 3
L_SURFACE, L_POST, L_TEXT = 1, 2, 3
_SS = 4  # supersampling of the glyph coverage


def _outline(surface: str, shape: str, text_len: int, cell: float) -> np.ndarray:
    """The surface's outline around a line of ``text_len`` characters, unrotated, centred, in pixels."""
    pad = PAD[surface]
    bw, bh = (text_width("X" * text_len) + 2 * pad) * cell, (GLYPH_H + 2 * pad) * cell
    if shape == "circle":  # the unit circle has radius 0.95; the text box's corners touch it from inside
        return unit_polygon("circle") * (0.5 * math.hypot(bw, bh) / 0.95)
    if surface == "object":  # a square around the text box
        return _rect(max(bw, bh), max(bw, bh))
    return _rect(bw, bh)


def _room(size: int, surface: str) -> tuple[float, float]:
    """Width and height an outline may take (a sign's post needs some ground below the board)."""
    m = 2 * size * 0.03
    return size - m, size - m - (size * 0.12 if surface == "sign" else 0.0)


def _max_extent(outline: np.ndarray, max_rot: float) -> np.ndarray:
    """(width, height) of ``outline`` rotated by anything in [-max_rot, max_rot] degrees (its worst case)."""
    spans = [np.ptp(outline @ rotation(a).T, axis=0) for a in np.linspace(-max_rot, max_rot, 9)]
    return np.max(spans, axis=0)


def max_chars(size: int, surface: str = "sign") -> int:
    """The longest single line that fits ``surface`` (every shape it may take) at the smallest glyph size."""
    shapes = OBJECT_SHAPES if surface == "object" else ("square",)
    room = np.array(_room(size, surface))
    n = 0
    while n < 40 and all(
        (_max_extent(_outline(surface, sh, n + 1, MIN_CELL_PX), MAX_ROT) <= room).all() for sh in shapes
    ):
        n += 1
    return n


def random_text(rng: np.random.Generator, size: int, surface: str) -> str:
    """A lexicon word (60%) or a random string of 2-5 characters, either fitting ``surface`` at ``size``."""
    limit = max_chars(size, surface)
    words = [w for w in LEXICON if len(w) <= limit]
    u = rng.random(3)
    n = 2 + int(u[1] * max(1, min(limit, 5) - 1))
    alphabet = CHARSET if u[2] < 0.25 else CHARSET[:26]
    rand = "".join(alphabet[i] for i in rng.integers(len(alphabet), size=n))[: max(1, limit)]
    return words[int(u[0] * len(words))] if u[0] < 0.6 and words else rand


def _fitting_surface(text: str, size: int, surface: str, given: bool) -> str:
    """``surface`` if ``text`` fits it; else (when the surface was drawn, not given) the first surface it fits."""
    if len(text) <= max_chars(size, surface):
        return surface
    fits = [s for s in SURFACES if len(text) <= max_chars(size, s)]
    if given or not fits:
        most = max_chars(size, surface if given else "sign")
        raise ConfigError(
            f"--text {text!r} has {len(text)} characters; a {surface if given else 'sign'} in a {size}-pixel image "
            f"holds at most {most} (give a shorter word or a larger --size)."
        )
    return fits[0]


def _glyph_alpha(text: str, cell: float, rot: float, cx: float, cy: float, size: int) -> np.ndarray:
    """Anti-aliased coverage of ``text`` (float32 HxW): its lit cells filled at 4x resolution, area-downsampled."""
    cells = text_cells(text).astype(np.float64)
    ox, oy = text_width(text) / 2.0, GLYPH_H / 2.0
    e = 0.02  # neighbouring cells overlap a little: no seams between them
    sq = np.array([[-e, -e], [1 + e, -e], [1 + e, 1 + e], [-e, 1 + e]])
    local = (cells[:, None, :] + sq[None] - (ox, oy)) * cell  # (N, 4, 2) pixels, unrotated, centred
    pts = local @ rotation(rot).T + (cx, cy)
    hi = np.zeros((size * _SS, size * _SS), np.uint8)
    fixed = [np.round((p * _SS + (_SS - 1) / 2.0) * 16).astype(np.int32).reshape(-1, 1, 2) for p in pts]
    cv2.fillPoly(hi, fixed, 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(hi, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _rect(w: float, h: float) -> np.ndarray:
    return np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])


def _composite(canvas: np.ndarray, alpha: np.ndarray, color) -> None:
    a = alpha[..., None]
    canvas *= 1.0 - a
    canvas += np.asarray(color, np.float32) * a


def render_glyph(
    seed: int,
    *,
    text: str | None = None,
    surface: str | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """A word on a sign, plate or object; unspecified choices are drawn from ``seed`` (always in the same order).

    ``attrs`` holds ``text``, ``lines`` (``[{"text", "polygon"}]``), ``surface``, colours, ``cell`` (pixels per font
    cell), ``rotation`` and ``center``; ``mask``/``box`` cover the surface (text included); ``extras["glyphs"]`` is the
    text's coverage (uint8, 255 = ink) and ``objects`` holds one entry with the surface's box and mask.
    """
    seed, size = check_seed(seed), check_size(size)
    background, style = canonical("background", background), canonical("style", style)
    if surface is not None and surface not in SURFACES:
        raise ConfigError(f"unknown --surface {surface!r}; valid surfaces are: {', '.join(SURFACES)}.")
    if text is not None:
        text = check_text(text)
    rng = make_rng(seed)
    drawn_surface = SURFACES[int(rng.integers(len(SURFACES)))]
    surface_given = surface is not None
    surface = surface or drawn_surface
    if text is not None:
        surface = _fitting_surface(text, size, surface, surface_given)
    drawn_bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background = background or drawn_bg
    drawn_text = random_text(rng, size, surface)
    text = text or drawn_text
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template) % N_TEMPLATES
    u = rng.random(8)
    if surface == "object":
        shape = OBJECT_SHAPES[int(u[0] * len(OBJECT_SHAPES))]
        color = list(COLORS)[int(u[1] * len(COLORS))]
        board = COLORS[color]
        ink = (20, 20, 20) if luminance(board) > 0.5 else (246, 246, 240)
    else:
        table = SIGN_COLORS if surface == "sign" else PLATE_COLORS
        color = list(table)[int(u[1] * len(table))]
        board, ink = table[color]
        shape = "square"
    # glyph cell: drawn in [MIN_CELL_PX, MAX_CELL * size], shrunk to fit but never below MIN_CELL_PX
    rot = float(MAX_ROT * (2 * u[3] - 1))
    cell = MIN_CELL_PX + max(0.0, MAX_CELL * size - MIN_CELL_PX) * u[2]
    span = np.ptp(_outline(surface, shape, len(text), cell) @ rotation(rot).T, axis=0)
    cell *= min(1.0, float(np.min(np.array(_room(size, surface)) / span)))  # shrink to fit ...
    cell = max(cell, MIN_CELL_PX)  # ... never below the floor (max_chars guarantees the floor fits)
    outline_local = _outline(surface, shape, len(text), cell)
    corners = outline_local @ rotation(rot).T
    lo, hi = corners.min(0), corners.max(0)
    m = size * 0.03
    room_w, room_h = _room(size, surface)
    cx = float(m - lo[0] + u[4] * max(0.0, room_w - (hi[0] - lo[0])))
    cy = float(m - lo[1] + u[5] * max(0.0, room_h - (hi[1] - lo[1])))
    canvas = make_background(background, rng, size)
    labels = np.zeros((size, size), np.uint8)
    if surface == "sign":  # the post, from the board's middle down to the image edge
        pw = max(1.5, cell * 1.6)
        post = np.array([[cx - pw / 2, cy], [cx + pw / 2, cy], [cx + pw / 2, size + 2], [cx - pw / 2, size + 2]])
        pa = poly_alpha(post, size, size)
        _composite(canvas, pa, (92, 88, 84))
        labels[pa >= 0.5] = L_POST
    body_pts = corners + (cx, cy)
    shadow = cv2.GaussianBlur(poly_alpha(body_pts + max(1.0, size / 45), size, size), (0, 0), max(0.8, size / 50))
    canvas *= (1.0 - 0.3 * shadow)[..., None]
    ba = poly_alpha(body_pts, size, size)
    rim = np.asarray(board, np.float32) * 0.72  # a darker border frames the board
    _composite(canvas, ba, rim)
    inner = outline_local * (1.0 - max(1.0, cell * 0.5) / max(1.0, float(np.abs(outline_local).max())))
    _composite(canvas, poly_alpha(inner @ rotation(rot).T + (cx, cy), size, size), board)
    labels[ba >= 0.5] = L_SURFACE
    ga = _glyph_alpha(text, cell, rot, cx, cy, size)
    _composite(canvas, ga, ink)
    labels[ga >= 0.5] = L_TEXT
    line_box = _rect(text_width(text) + 1.0, GLYPH_H + 1.0) * cell  # half a cell of margin around the glyph cells
    polygon = np.round(line_box @ rotation(rot).T + (cx, cy), 3).tolist()
    mask = labels == L_SURFACE
    mask |= labels == L_TEXT
    box = bbox(mask)
    attrs: dict[str, Any] = {"kind": "glyph", "text": text, "surface": surface, "shape": shape, "color": color}
    attrs |= {"background": background, "style": style, "template": template, "size": size, "seed": seed}
    attrs |= {"cell": round(cell, 4), "rotation": round(rot, 3), "center": [round(cx, 3), round(cy, 3)]}
    attrs["lines"] = [{"text": text, "polygon": polygon}]
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=glyph_caption(attrs, template),
        attrs=attrs,
        mask=mask,
        box=box,
        edges=edges_from_labels(labels),
        objects=[{"kind": surface, "text": text, "box": box, "mask": mask}],
        extras={"glyphs": np.round(ga * 255).astype(np.uint8)},
    )


_BG = {"brick": "on brick", "sky": "against the sky", "water": "by the water"}


def glyph_caption(attrs: dict[str, Any], template: int = 0) -> str:
    """``a sign that says "CAT" on brick`` and two other forms (with the style and the surface's colour)."""
    text, surface, color = attrs["text"], attrs["surface"], attrs["color"]
    bg = _BG.get(attrs["background"], f"on {attrs['background']}")
    noun = f"{color} {attrs['shape']}" if surface == "object" else f"{color} {surface}"
    an = "an" if noun[0] in "aeiou" else "a"
    if template % N_TEMPLATES == 0:
        return f'a {surface if surface != "object" else attrs["shape"]} that says "{text}" {bg}'
    if template % N_TEMPLATES == 1:
        return f'{STYLES[attrs["style"]]} {an} {noun} that says "{text}" {bg}'
    return f'{an} {noun} with the word "{text}", {bg}, {attrs["style"]}'
