"""Faces: procedural identities under nuisance changes, with exact 5-point keypoints (InstantID's layout).

The identity (features from :mod:`tailor.world.identity`) is fixed by (identity id, class word); the seed
draws the nuisances: position, scale, slight roll, turn (features shift sideways, the far eye narrows),
expression (mouth curve, eye openness), lighting (a brightness gradient), shirt colour and background.
Everything is drawn in a face-local frame (face half-height = 1, x right, y down) mapped to pixels by one
similarity transform, so the keypoints are the exact transformed feature points.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from tailor.world.backgrounds import background as make_background
from tailor.world.captions import N_TEMPLATES, caption_for
from tailor.world.draw import bbox, edges_from_labels, ellipse_pts, fill, stroke, to_fixed
from tailor.world.identity import (
    EYE_COLORS,
    EYE_SHAPES,
    FACE_SHAPES,
    FRAME_COLORS,
    HAIR_COLORS,
    SKIN,
    identity_features,
)
from tailor.world.sample import Sample
from tailor.world.styles import _gradient, apply_style
from tailor.world.vocab import BACKGROUNDS, canonical, check_seed, check_size, make_rng, pick

SHIRTS = [(40, 60, 120), (150, 30, 40), (40, 110, 60), (230, 230, 225), (60, 60, 65), (200, 150, 40), (110, 60, 140)]
# label ids in draw order; edges are drawn on the later-drawn side of every boundary
L_SHIRT, L_NECK, L_HAIR_BACK, L_EAR, L_FACE, L_BEARD, L_HAIR = 1, 2, 3, 4, 5, 6, 7
L_BROW, L_EYE, L_IRIS, L_NOSE, L_MOUTH, L_MARK, L_GLASSES = 8, 9, 10, 11, 12, 13, 14


def _mul(c, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(v * k)))) for v in c)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


class _Painter:
    """Draws local-frame polygons onto the image and label map through one similarity transform."""

    def __init__(self, img, labels, cx, cy, s, roll):
        self.img, self.labels, self.s = img, labels, s
        a = math.radians(roll)
        self.m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
        self.c = np.array([cx, cy])

    def px(self, pts) -> np.ndarray:
        return np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.c

    def fill(self, pts, color, label):
        fill(self.img, self.labels, self.px(pts), color, label)

    def ellipse(self, cx, cy, ax, ay, color, label, n=24):
        self.fill(ellipse_pts(cx, cy, ax, ay, n), color, label)

    def stroke(self, pts, color, width, label=0, closed=False):
        stroke(self.img, self.labels, self.px(pts), color, max(1, round(width * self.s)), label, closed)


def _face_outline(shape: str, n: int = 40) -> np.ndarray:
    hw, e, taper = FACE_SHAPES[shape]
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = hw * np.sign(c) * np.abs(c) ** (2 / e)
    y = np.sign(s) * np.abs(s) ** (2 / e)
    x *= 1 - taper * np.clip(y, 0, None) ** 2
    return np.stack([x, y], 1)


def _hair_back(p: _Painter, f: dict[str, Any], hw: float, color) -> None:
    """The part of the hair behind the head (long, bob, bun, curls)."""
    style = f["hair_style"]
    if style in ("long", "bob"):
        bottom = 1.3 if style == "long" else 0.55
        top = ellipse_pts(0, -0.02, hw * 1.22, 1.14, 20, np.pi, 2 * np.pi)
        p.fill(np.vstack([top, [[hw * 1.24, bottom], [-hw * 1.24, bottom]]]), color, L_HAIR_BACK)
    elif style == "bun":
        p.ellipse(0, -1.12, 0.3, 0.26, color, L_HAIR_BACK)
    elif style == "curly":
        for a in np.linspace(np.pi * 0.85, np.pi * 2.15, 9):
            p.ellipse(hw * 1.1 * math.cos(a), -0.02 + 1.08 * math.sin(a), 0.24, 0.24, color, L_HAIR_BACK, 14)


def _hair_front(p: _Painter, f: dict[str, Any], hw: float, color) -> None:
    """The cap of hair over the skull, down to a style-dependent hairline."""
    style = f["hair_style"]
    if style == "bald":
        return
    w = hw * 1.1
    xs = np.linspace(w, -w, 9)
    r = np.abs(xs) / w
    hairline = {
        "short": -0.55 + 0.25 * r**2,
        "crew": -0.72 + 0.3 * r**2,
        "side": -0.78 + 0.42 * (xs / w + 1) / 2,
        "spiky": -0.58 + 0.25 * r**2,
        "curly": -0.55 + 0.2 * r**2,
        "long": -0.82 + 0.45 * r,
        "bob": -0.42 + 0.0 * r,
        "bun": -0.78 + 0.4 * r,
    }[style]
    top = ellipse_pts(0, -0.02, w, 1.09, 24, np.pi, 2 * np.pi)
    if style == "spiky":
        k = np.arange(len(top))
        top = top * np.where(k % 2 == 1, 1.16, 1.0)[:, None] + [0, -0.02 * 0.16]
    p.fill(np.vstack([top, np.stack([xs, hairline], 1)]), color, L_HAIR)


def _eye(p, f, ex, ey, ew, openness, yaw, iris_c) -> None:
    eh = ew * EYE_SHAPES[f["eye_shape"]] * openness
    p.fill(ellipse_pts(ex, ey, ew, eh, 20), (250, 250, 248), L_EYE)
    ir = min(eh * 0.98, ew * 0.55)
    ix = ex + yaw * ew * 0.3
    p.ellipse(ix, ey, ir, ir, iris_c, L_IRIS, 16)
    p.ellipse(ix, ey, ir * 0.5, ir * 0.5, (12, 12, 12), L_IRIS, 12)
    p.stroke(ellipse_pts(ex, ey, ew * 1.02, eh * 1.02, 12, np.pi, 2 * np.pi), (30, 22, 20), 0.035)


def _mouth(p, f, mx, my, mw, smile, lip_c) -> tuple[np.ndarray, np.ndarray]:
    lc = np.array([mx - mw, my - smile * 0.06])
    rc = np.array([mx + mw, my - smile * 0.06])
    t = np.linspace(0, 1, 9)[:, None]

    def curve(dy):  # quadratic Bezier from left to right corner with its middle moved down by dy
        mid = np.array([mx, my + dy])
        return (1 - t) ** 2 * lc + 2 * (1 - t) * t * mid + t**2 * rc

    lip = 0.05 + 0.03 * f["lip_red"]
    upper, lower = curve(smile * 0.08 - lip), curve(smile * 0.08 + lip * 1.3 + 0.04)
    p.fill(np.vstack([upper, lower[::-1]]), lip_c, L_MOUTH)
    p.stroke(curve(smile * 0.09 + 0.02), (70, 25, 30), 0.035)
    return lc, rc


def draw_face(img, labels, f: dict[str, Any], nz: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw identity ``f`` under nuisances ``nz`` onto ``img``/``labels``; returns (keypoints (5, 2), face mask)."""
    (cx, cy), s = nz["center"], nz["scale"] * size * f["head_scale"]
    yaw, smile, openness = nz["yaw"], nz["smile"], nz["eye_open"]
    p = _Painter(img, labels, cx, cy, s, nz["roll"])
    skin = SKIN[f["skin"]]
    hair_c = HAIR_COLORS[f["hair_color"]]
    hw = FACE_SHAPES[f["face_shape"]][0]
    p.ellipse(0, 2.15, 1.55, 0.95, SHIRTS[nz["shirt"]], L_SHIRT)
    p.fill([[-0.3, 0.5], [0.3, 0.5], [0.34, 1.4], [-0.34, 1.4]], _mul(skin, 0.82), L_NECK)
    outline = _face_outline(f["face_shape"]) + [yaw * 0.04, 0]
    for side in (-1, 1):
        p.ellipse(side * hw * 0.97 + yaw * 0.03, 0.0, 0.12, 0.2, _mul(skin, 0.9), L_EAR, 14)
        if f["earrings"]:
            p.ellipse(side * hw * 0.97 + yaw * 0.03, 0.24, 0.05, 0.05, (225, 190, 60), L_MARK, 10)
    _hair_back(p, f, hw, hair_c)
    p.fill(outline, skin, L_FACE)
    face_mask = np.zeros(labels.shape, np.uint8)
    cv2.fillPoly(face_mask, [to_fixed(p.px(outline))], 1, lineType=cv2.LINE_8, shift=4)
    _hair_front(p, f, hw, hair_c)
    dx = yaw * 0.16
    beard = f["beard"]
    if beard == "full":
        low = outline[outline[:, 1] > 0.3]
        p.fill(np.vstack([low, [[low[-1, 0], 0.3], [low[0, 0], 0.3]]]), _mul(hair_c, 0.95), L_BEARD)
    elif beard == "goatee":
        p.ellipse(dx, f["mouth_y"] + 0.22, 0.17, 0.15, _mul(hair_c, 0.95), L_BEARD, 16)
    ew, sp, ey = f["eye_size"], f["eye_spacing"], f["eye_y"]
    eyes = []
    for side in (-1, 1):
        far = 1.0 - 0.3 * abs(yaw) if side * yaw > 0 else 1.0
        ex = side * sp * (far if side * yaw > 0 else 1.0) + dx
        tilt = math.radians(f["brow_tilt"]) * -side
        bx, by, bl = ex, ey - f["brow_raise"] - 0.03 * smile, ew * 1.25 * far
        pts = np.array([[bx - bl, by + bl * math.tan(tilt)], [bx + bl, by - bl * math.tan(tilt)]])
        th = f["brow_thick"]
        p.fill(np.vstack([pts + [0, -th / 2], pts[::-1] + [0, th / 2]]), _mul(hair_c, 0.8), L_BROW)
        _eye(p, f, ex, ey, ew * far, openness, yaw, EYE_COLORS[f["eye_color"]])
        eyes.append((ex, ey))
    nx, ny = dx * 1.5, ey + 0.1 + f["nose_len"]
    nw = f["nose_w"] * (1.4 if f["nose_style"] == "wide" else 1.0)
    nose_c = _mul(skin, 0.78)
    if f["nose_style"] == "button":
        p.ellipse(nx, ny - 0.04, nw * 0.7, 0.06, nose_c, L_NOSE, 14)
    else:
        p.fill([[nx - nw, ny], [nx + nw, ny], [dx * 1.1, ny - f["nose_len"] * 0.9]], nose_c, L_NOSE)
    for side in (-1, 1):
        p.ellipse(nx + side * nw * 0.45, ny - 0.01, 0.03, 0.02, _mul(skin, 0.5), L_NOSE, 8)
    if beard == "moustache":
        my0 = f["mouth_y"] - 0.07
        p.fill([[dx - f["mouth_w"], my0 + 0.05], [dx, my0 - 0.04], [dx + f["mouth_w"], my0 + 0.05]], hair_c, L_BEARD)
    lip_c = _mix(_mul(skin, 0.8), (195, 60, 75), f["lip_red"])
    lc, rc = _mouth(p, f, dx, f["mouth_y"], f["mouth_w"], smile, lip_c)
    if f["cls"] == "child":  # rosy cheeks
        for side in (-1, 1):
            p.ellipse(side * sp * 1.15 + dx, ey + 0.3, 0.11, 0.07, _mix(skin, (235, 110, 120), 0.45), L_MARK, 14)
    if f["mole"]:
        p.ellipse(f["mole"][0] + dx, f["mole"][1], 0.035, 0.035, (70, 40, 30), L_MARK, 10)
    if f["freckles"]:
        fr = make_rng(f["freckle_seed"]).random((8, 2))
        for (u, v), side in zip(fr, (-1, 1) * 4):
            p.ellipse(side * (0.25 + 0.3 * u) + dx, ey + 0.2 + 0.15 * v, 0.03, 0.03, _mul(skin, 0.72), L_MARK, 8)
    if f["glasses"]:
        frame = FRAME_COLORS[f["frame_color"]]
        r = ew * 1.45
        for ex, ey_ in eyes:
            if f["glasses"] == "round":
                pts = ellipse_pts(ex, ey_, r, r * 0.85, 20)
            else:
                pts = np.array([[-r, -0.75 * r], [r, -0.75 * r], [r, 0.75 * r], [-r, 0.75 * r]]) + (ex, ey_)
            p.stroke(pts, frame, 0.045, L_GLASSES, closed=True)
        p.stroke([[eyes[0][0] + r, eyes[0][1]], [eyes[1][0] - r, eyes[1][1]]], frame, 0.045, L_GLASSES)
    kps = p.px(np.array([eyes[0], eyes[1], (nx, ny), lc, rc]))
    return kps.astype(np.float32), face_mask.astype(bool)


def render_face(
    seed: int,
    *,
    identity: int | None = None,
    cls: str | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """A face of ``identity`` (None: drawn from ``seed``) as ``cls`` (None: the identity's own class).

    ``attrs`` holds ``identity``, ``cls``, the identity's ``features`` and the nuisances; ``keypoints`` are
    left eye, right eye, nose tip, left and right mouth corner in pixels; ``mask``/``box`` cover the face.
    """
    seed, size = check_seed(seed), check_size(size)
    cls, background, style = canonical("cls", cls), canonical("background", background), canonical("style", style)
    rng = make_rng(seed)
    drawn_identity = int(rng.integers(1 << 20))
    identity = drawn_identity if identity is None else int(identity)
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    f = identity_features(identity, cls)
    u = rng.random(10)
    nz = {
        "center": [_r(size * (0.42 + 0.16 * u[0])), _r(size * (0.46 + 0.1 * u[1]))],
        "scale": _r(0.25 + 0.05 * u[2]),
        "roll": _r(-8 + 16 * u[3]),
        "yaw": _r(-0.6 + 1.2 * u[4]),
        "smile": _r(-0.4 + 1.4 * u[5]),
        "eye_open": _r(0.5 + 0.5 * u[6]),
        "light": _r(0.25 * u[7]),
        "shirt": int(u[8] * len(SHIRTS)),
    }
    canvas = make_background(background, rng, size)
    img = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    labels = np.zeros((size, size), np.uint8)
    kps, mask = draw_face(img, labels, f, nz, size)
    lit = img.astype(np.float32) * _gradient(rng, size, size, nz["light"])[..., None]
    attrs = {"kind": "face", "identity": identity, "cls": f["cls"], "background": background, "style": style}
    attrs |= {"template": template, "size": size, "seed": seed, **nz, "features": f}
    box = bbox(mask)
    return Sample(
        image=apply_style(lit, style, rng),
        caption=caption_for(attrs, template),
        attrs=attrs,
        mask=mask,
        box=box,
        edges=edges_from_labels(labels),
        objects=[{"kind": "face", "identity": identity, "cls": f["cls"], "box": box, "mask": mask}],
        keypoints=kps,
    )


def _r(x: float) -> float:
    return round(float(x), 4)
