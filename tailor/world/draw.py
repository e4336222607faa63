"""Drawing primitives: unit shape polygons, anti-aliased fills, pattern fields, label maps to edges and boxes.

Everything is vectorised numpy or one OpenCV call; no per-pixel Python. Polygons are drawn with
``shift=4`` (1/16 pixel precision) and ``LINE_AA``, so small shapes keep smooth, exact outlines.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

SHIFT = 4
_ONE = 1 << SHIFT


@functools.cache
def unit_polygon(shape: str) -> np.ndarray:
    """The outline of ``shape`` in a unit frame (x right, y down), centred, fitting in [-1, 1]^2."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * 0.95
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8
    elif shape == "triangle":
        t = np.deg2rad([-90, 30, 150])
        pts = np.stack([np.cos(t), np.sin(t)], 1) * 1.12
        pts[:, 1] += 0.28  # centre the bounding box, not the centroid
    elif shape == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
        pts[:, 1] += 0.1
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], 1)
        pts -= (pts.max(0) + pts.min(0)) / 2
        pts /= np.abs(pts).max()
    elif shape == "hexagon":
        t = np.deg2rad(np.arange(6) * 60)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "cross":
        a, b = 0.32, 0.95
        arm = np.array([[-a, -b], [a, -b], [a, -a]])
        pts = np.vstack([arm @ rotation(90 * k).T for k in range(4)])
    elif shape == "diamond":
        pts = np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], float)
    else:
        raise KeyError(shape)
    pts = np.ascontiguousarray(pts, dtype=np.float64)
    pts.setflags(write=False)
    return pts


def rotation(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def place(pts: np.ndarray, cx: float, cy: float, scale: float, deg: float = 0.0) -> np.ndarray:
    """Unit-frame points -> pixel coordinates (rotate by ``deg``, scale, translate)."""
    return pts @ (rotation(deg).T * scale) + (cx, cy)


def object_outlines(attrs: dict | None, size: int) -> list[tuple[dict, np.ndarray, list[float]]]:
    """The drawn objects of a world item's ``attrs`` (a scene's ``objects`` or the item itself): per object its
    attributes, its true outline in pixels and the outline's tight box ``[x0, y0, x1, y1]`` clipped to the image.
    Objects without a known shape or a placement are skipped."""
    from tailor.world.vocab import SHAPES

    attrs = attrs or {}
    out = []
    for o in attrs["objects"] if isinstance(attrs.get("objects"), list) else [attrs]:
        if o.get("shape") not in SHAPES or "center" not in o:
            continue
        (cx, cy), r = o["center"], float(o["scale"]) * size
        pts = place(unit_polygon(o["shape"]), cx, cy, r, float(o.get("rotation", 0.0)))
        lo, hi = np.clip(pts.min(0), 0, size), np.clip(pts.max(0), 0, size)
        out.append((o, pts, [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]))
    return out


def to_fixed(pts: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 points for OpenCV's ``shift=SHIFT`` sub-pixel drawing."""
    return np.round(np.asarray(pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def poly_alpha(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage of a filled polygon, float32 HxW in [0, 1]."""
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [to_fixed(pts)], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def fill(img: np.ndarray, labels: np.ndarray | None, pts: np.ndarray, color, label: int = 0) -> None:
    """Fill a polygon onto ``img`` (anti-aliased, in place) and its hard version onto ``labels``."""
    fp = [to_fixed(pts)]
    cv2.fillPoly(img, fp, tuple(int(c) for c in color), lineType=cv2.LINE_AA, shift=SHIFT)
    if labels is not None and label:
        cv2.fillPoly(labels, fp, int(label), lineType=cv2.LINE_8, shift=SHIFT)


def stroke(img, labels, pts, color, thickness: int, label: int = 0, closed: bool = False) -> None:
    """A polyline of ``thickness`` pixels onto ``img`` (anti-aliased) and ``labels``."""
    fp = [to_fixed(pts)]
    cv2.polylines(img, fp, closed, tuple(int(c) for c in color), max(1, thickness), cv2.LINE_AA, SHIFT)
    if labels is not None and label:
        cv2.polylines(labels, fp, closed, int(label), max(1, thickness), cv2.LINE_8, SHIFT)


@functools.cache
def _arc(n: int, a0: float, a1: float) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * np.pi - 1e-9)
    arc = np.stack([np.cos(t), np.sin(t)], 1)
    arc.setflags(write=False)
    return arc


def ellipse_pts(cx: float, cy: float, ax: float, ay: float, n: int = 28, a0: float = 0.0, a1: float = 2 * np.pi):
    """Points on an axis-aligned ellipse (unit or pixel frame), from angle ``a0`` to ``a1``."""
    return _arc(n, float(a0), float(a1)) * (ax, ay) + (cx, cy)


@functools.lru_cache(maxsize=16)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 (ys, xs) pixel-centre coordinates, cached per size."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def local_grid(h: int, w: int, cx: float, cy: float, scale: float, deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel centre in an object's unit frame (inverse of :func:`place`), as two float32 HxW arrays."""
    a = math.radians(deg)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    ys, xs = pixel_grid(h, w)
    xs = xs - np.float32(cx)
    ys = ys - np.float32(cy)
    return xs * c + ys * s, ys * c - xs * s


def _band(t: np.ndarray, period: float) -> np.ndarray:
    """Signed distance (unit frame) to the edge of alternating bands of width period/2; > 0 inside a band."""
    f = t * (1.0 / period)
    f -= np.floor(f)
    return (0.25 - np.abs(f - 0.5)) * period


def pattern_field(pattern: str, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray | None:
    """Anti-aliased coverage (float32 HxW, 0..1) of a pattern's second colour; None for ``plain``.

    Signed distances are computed in the object's unit frame and multiplied by its pixel ``scale``, so
    edges are one pixel soft at any size.
    """
    if pattern == "plain":
        return None
    if pattern == "striped":
        sd = _band((u + v) * 0.7071, 0.52)
    elif pattern == "checkered":
        du, dv = _band(u + 0.1, 0.62), _band(v + 0.1, 0.62)
        sd = np.sign(du * dv) * np.minimum(np.abs(du), np.abs(dv))
    elif pattern == "dotted":
        p = 0.6
        fu = u / p + 0.5
        fv = v / p + 0.5
        fu -= np.round(fu)
        fv -= np.round(fv)
        sd = 0.17 - np.sqrt(fu * fu + fv * fv) * p
    elif pattern == "halves":
        sd = u
    elif pattern == "rings":
        sd = _band(np.sqrt(u * u + v * v) + 0.14, 0.56)
    else:
        raise KeyError(pattern)
    return np.clip(sd * scale + 0.5, 0.0, 1.0).astype(np.float32)


def edges_from_labels(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label is greater than a 4-neighbour's: one-pixel outlines on the upper (drawn-later) side.

    For a single object (labels 0 = background) this is exactly the inner boundary of its mask plus
    the boundaries between its parts. Returns uint8 0/255.
    """
    L = labels
    e = np.zeros(L.shape, bool)
    e[1:] |= L[1:] > L[:-1]
    e[:-1] |= L[:-1] > L[1:]
    e[:, 1:] |= L[:, 1:] > L[:, :-1]
    e[:, :-1] |= L[:, :-1] > L[:, 1:]
    return e.astype(np.uint8) * 255


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box ``(x0, y0, x1, y1)`` of a boolean mask, x1/y1 exclusive (``mask[y0:y1, x0:x1]``); zeros if empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def value_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Smooth random field in about [0, 1]: a coarse random grid resized with bicubic interpolation."""
    coarse = rng.random((max(2, cells_y), max(2, cells_x or cells_y)), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
