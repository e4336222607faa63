"""Procedural face identities: every facial feature is a deterministic function of (identity id, class word).

An identity draws all its features from its own generator in a fixed order, then the class word
(man / woman / child) adjusts them (a child is rounder with bigger eyes and a smaller nose and never
has grey hair or a beard; a man may have a beard and mostly short hair; ...). The same id under
another class word therefore keeps its skin, eyes and marks. Nuisances (pose, expression, light,
background) are not part of an identity; see :mod:`tailor.world.faces`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailor.world.vocab import FACE_CLASSES, make_rng

IDENTITY_SALT = 7919

SKIN = [
    (255, 226, 200),
    (242, 198, 164),
    (226, 174, 134),
    (204, 146, 104),
    (168, 112, 76),
    (128, 82, 54),
    (96, 62, 42),
]
HAIR_COLORS = {
    "black": (28, 24, 24),
    "dark brown": (64, 42, 28),
    "brown": (118, 76, 42),
    "blonde": (228, 194, 116),
    "red": (176, 74, 32),
    "gray": (150, 150, 152),
    "white": (236, 236, 230),
}
EYE_COLORS = {
    "brown": (100, 62, 30),
    "dark": (42, 30, 22),
    "blue": (60, 125, 205),
    "green": (70, 145, 80),
    "gray": (125, 135, 145),
    "hazel": (145, 112, 52),
}
# name -> (half-width, superellipse exponent, chin taper), face half-height = 1
FACE_SHAPES = {
    "oval": (0.74, 2.0, 0.14),
    "round": (0.86, 2.0, 0.05),
    "long": (0.64, 2.0, 0.12),
    "square": (0.8, 3.0, 0.06),
    "heart": (0.82, 2.0, 0.3),
}
EYE_SHAPES = {"round": 0.78, "almond": 0.58, "narrow": 0.42}  # height / width
NOSE_STYLES = ("line", "button", "wide")
BEARD_STYLES = ("full", "goatee", "moustache")
HAIR_STYLES = ("bald", "short", "crew", "side", "spiky", "curly", "long", "bob", "bun")
_STYLE_WEIGHTS = {
    "man": (0.1, 0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.0, 0.0),
    "woman": (0.0, 0.05, 0.0, 0.1, 0.0, 0.12, 0.35, 0.23, 0.15),
    "child": (0.0, 0.25, 0.0, 0.1, 0.15, 0.2, 0.1, 0.12, 0.08),
}
# shared by all classes, so an identity keeps its hair colour under another class word (a child's grey -> blonde)
_HAIR_WEIGHTS = (0.22, 0.25, 0.22, 0.15, 0.08, 0.05, 0.03)
FRAME_COLORS = [(25, 25, 25), (110, 60, 30), (180, 30, 40), (200, 170, 60)]


def _weighted(u: float, names, weights) -> str:
    cum = np.cumsum(weights) / np.sum(weights)
    return list(names)[int(np.searchsorted(cum, u, side="right").clip(0, len(cum) - 1))]


def _r(x: float) -> float:
    return round(float(x), 4)


def identity_features(identity: int, cls: str | None = None) -> dict[str, Any]:
    """The features of face ``identity`` as class ``cls`` (None: the identity's own class). JSON-able."""
    rng = make_rng(IDENTITY_SALT, int(identity))
    own_cls = FACE_CLASSES[int(rng.integers(len(FACE_CLASSES)))]
    cls = cls or own_cls
    u = rng.random(16)
    f: dict[str, Any] = {
        "cls": cls,
        "face_shape": list(FACE_SHAPES)[int(u[0] * len(FACE_SHAPES))],
        "skin": int(rng.integers(len(SKIN))),
        "hair_color": _weighted(u[1], HAIR_COLORS, _HAIR_WEIGHTS),
        "hair_style": _weighted(u[2], HAIR_STYLES, _STYLE_WEIGHTS[cls]),
        "eye_color": list(EYE_COLORS)[int(u[3] * len(EYE_COLORS))],
        "eye_shape": list(EYE_SHAPES)[int(u[4] * len(EYE_SHAPES))],
        "eye_size": _r(0.12 + 0.04 * u[5]),
        "eye_spacing": _r(0.3 + 0.1 * u[6]),
        "eye_y": _r(-0.16 + 0.12 * u[7]),
        "brow_thick": _r(0.05 + 0.04 * u[8]),
        "brow_tilt": _r(-14 + 28 * u[9]),
        "brow_raise": _r(0.15 + 0.08 * u[10]),
        "nose_len": _r(0.2 + 0.12 * u[11]),
        "nose_w": _r(0.07 + 0.07 * u[12]),
        "nose_style": NOSE_STYLES[int(u[13] * len(NOSE_STYLES))],
        "mouth_y": _r(0.44 + 0.12 * u[14]),
        "mouth_w": _r(0.17 + 0.11 * u[15]),
    }
    lip_red, marks = rng.random(), rng.random(8)
    f["lip_red"] = _r(lip_red)
    f["mole"] = [_r(-0.5 + marks[1]), _r(-0.05 + 0.5 * marks[2])] if marks[0] < 0.3 else None
    f["freckles"] = bool(marks[3] < 0.22)
    f["freckle_seed"] = int(rng.integers(1 << 30))
    f["glasses"] = ("round" if marks[5] < 0.5 else "square") if marks[4] < 0.25 else None
    f["frame_color"] = int(marks[6] * len(FRAME_COLORS))
    beard_u, earring_u = rng.random(2)
    f["beard"] = BEARD_STYLES[int(beard_u / 0.4 * 3)] if (cls == "man" and beard_u < 0.4) else None
    f["earrings"] = bool(cls == "woman" and earring_u < 0.3)
    f["head_scale"] = 1.0
    if cls == "child":
        hw = FACE_SHAPES[f["face_shape"]][0]
        f["face_shape"] = "round" if hw < 0.8 else f["face_shape"]
        f["hair_color"] = {"gray": "blonde", "white": "blonde"}.get(f["hair_color"], f["hair_color"])
        f["eye_size"] = _r(f["eye_size"] * 1.3)
        f["eye_y"] = _r(f["eye_y"] + 0.09)
        f["nose_len"] = _r(f["nose_len"] * 0.72)
        f["mouth_w"] = _r(f["mouth_w"] * 0.85)
        f["brow_thick"] = _r(f["brow_thick"] * 0.8)
        f["head_scale"] = 0.82
    elif cls == "man":
        f["brow_thick"] = _r(f["brow_thick"] * 1.25)
        f["lip_red"] = _r(f["lip_red"] * 0.3)
    else:
        f["brow_thick"] = _r(f["brow_thick"] * 0.8)
        f["lip_red"] = _r(0.45 + 0.55 * f["lip_red"])
    return f
