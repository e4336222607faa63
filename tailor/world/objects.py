"""Single objects: one shape of one colour, optionally patterned, on a textured background.

:func:`paint_object` is the one routine that draws a shape (with pattern, decal, shading, rim and
shadow) and records its parts in a label map; objects, subjects and scenes all use it, so their
ground truth is computed the same way.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from tailor.world.backgrounds import background as make_background
from tailor.world.captions import N_TEMPLATES, caption_for
from tailor.world.draw import bbox, edges_from_labels, local_grid, pattern_field, place, poly_alpha, unit_polygon
from tailor.world.sample import Sample
from tailor.world.styles import apply_style
from tailor.world.vocab import (
    BACKGROUNDS,
    COLORS,
    PATTERNS,
    SHAPES,
    canonical,
    check_seed,
    check_size,
    make_rng,
    pick,
    shade,
)

_KERNEL3 = np.ones((3, 3), np.uint8)


def sample_pose(rng: np.random.Generator, size: int, scale=(0.22, 0.36), max_rot: float = 20.0) -> dict[str, float]:
    """Random centre, radius (as a fraction of ``size``) and rotation that keep the object inside the image."""
    s = float(rng.uniform(*scale))
    r = s * size
    margin = r + size * 0.03
    cx = float(rng.uniform(margin, size - margin))
    cy = float(rng.uniform(margin, size - margin))
    rot = float(rng.uniform(-max_rot, max_rot))
    return {"center": [round(cx, 3), round(cy, 3)], "scale": round(s, 4), "rotation": round(rot, 3)}


def _decal_field(decal: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Anti-aliased coverage of a small symbol at the object's centre (in its rotating frame)."""
    if decal == "dot":
        sd = 0.2 - np.sqrt(u * u + v * v)
    elif decal == "ring":
        sd = 0.065 - np.abs(np.sqrt(u * u + v * v) - 0.25)
    elif decal == "bar":
        sd = np.minimum(0.42 - np.abs(u), 0.09 - np.abs(v))
    elif decal == "cross":
        a, b = (u + v) * 0.7071, (u - v) * 0.7071
        sd = np.maximum(np.minimum(0.3 - np.abs(a), 0.07 - np.abs(b)), np.minimum(0.3 - np.abs(b), 0.07 - np.abs(a)))
    else:
        raise KeyError(decal)
    return np.clip(sd * r + 0.5, 0.0, 1.0).astype(np.float32)


def paint_object(
    canvas: np.ndarray,
    labels: np.ndarray,
    label: int,
    shape: str,
    pose: dict[str, Any],
    color: tuple[int, int, int],
    pattern: str = "plain",
    pattern_color: tuple[int, int, int] | None = None,
    decal: str | None = None,
    decal_color: tuple[int, int, int] = (20, 20, 20),
) -> None:
    """Draw one object onto ``canvas`` (float32 HxWx3, in place) and its parts onto ``labels`` (uint8).

    Labels: ``label`` = body, ``label + 1`` = pattern's second colour, ``label + 2`` = decal.
    """
    h, w = labels.shape
    size = min(h, w)
    (cx, cy), r, rot = pose["center"], pose["scale"] * size, pose["rotation"]
    alpha = poly_alpha(place(unit_polygon(shape), cx, cy, r, rot), h, w)
    u, v = local_grid(h, w, cx, cy, r, rot)
    layer = np.empty((h, w, 3), np.float32)
    layer[:] = color
    body = alpha >= 0.5
    labels[body] = label
    pa = pattern_field(pattern, u, v, r)
    if pa is not None:
        layer += (np.asarray(pattern_color or shade(color), np.float32) - layer) * pa[..., None]
        labels[body & (pa >= 0.5)] = label + 1
    if decal:
        da = _decal_field(decal, u, v, r)
        layer += (np.asarray(decal_color, np.float32) - layer) * da[..., None]
        labels[body & (da >= 0.5)] = label + 2
    # soft top-left light and a darker rim make same-coloured object/background pairs readable
    light = 1.0 + 0.07 * np.clip(-(u + v) * 0.6, -1.0, 1.0)
    rim = alpha - cv2.erode(alpha, _KERNEL3)
    layer *= (light * (1.0 - 0.3 * rim))[..., None]
    off = max(1, round(size / 40))
    shadow = cv2.GaussianBlur(np.roll(alpha, (off, off), axis=(0, 1)), (0, 0), max(0.8, size / 50))
    canvas *= (1.0 - 0.32 * shadow)[..., None]
    a3 = alpha[..., None]
    canvas *= 1.0 - a3
    canvas += layer * a3


def object_entry(labels: np.ndarray, label: int, **attrs: Any) -> dict[str, Any]:
    """Per-object ground truth from the label map: visible mask and its tight box, plus attrs."""
    mask = (labels >= label) & (labels <= label + 2)
    return {**attrs, "box": bbox(mask), "mask": mask}


def render_object(
    seed: int,
    *,
    shape: str | None = None,
    color: str | None = None,
    pattern: str | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """One object of one colour on a patterned background; unspecified attributes are drawn from ``seed``.

    The generator draws every attribute in a fixed order whether or not it is given, so fixing one
    attribute leaves the others (and the pose) unchanged for the same seed.
    """
    seed, size = check_seed(seed), check_size(size)
    shape, color = canonical("shape", shape), canonical("color", color)
    pattern, background = canonical("pattern", pattern), canonical("background", background)
    style = canonical("style", style)
    rng = make_rng(seed)
    shape = pick(rng, SHAPES, shape)
    color = pick(rng, tuple(COLORS), color)
    pattern = pick(rng, PATTERNS, pattern)
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    pose = sample_pose(rng, size)
    canvas = make_background(background, rng, size)
    labels = np.zeros((size, size), np.uint8)
    paint_object(canvas, labels, 1, shape, pose, COLORS[color], pattern)
    obj = object_entry(labels, 1, shape=shape, color=color, pattern=pattern, **pose)
    attrs = {"kind": "object", "shape": shape, "color": color, "pattern": pattern, "background": background}
    attrs |= {"style": style, "template": template, "size": size, "seed": seed, **pose}
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=caption_for(attrs, template),
        attrs=attrs,
        mask=obj["mask"],
        box=obj["box"],
        edges=edges_from_labels(labels),
        objects=[obj],
    )
