"""Scenes: one to three objects on one background, with per-object masks and boxes (layout-to-image data).

Objects are placed by rejection sampling so their discs barely overlap; later objects are drawn on
top, and each object's mask is what stays visible of it. The caption names every object in drawing
order: "a photo of a red plain star and a blue striped circle on sand".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.captions import N_TEMPLATES, caption_for
from tailor.world.draw import bbox, edges_from_labels
from tailor.world.objects import object_entry, paint_object
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
)

MAX_OBJECTS = 3


def _layout(rng: np.random.Generator, n: int, size: int) -> list[dict[str, Any]]:
    """``n`` poses whose discs overlap by at most ~15% of the smaller radius (always ``n`` poses)."""
    poses: list[dict[str, Any]] = []
    scale_hi = {1: 0.34, 2: 0.24, 3: 0.2}[n]
    for _ in range(n):
        best, best_gap = None, -np.inf
        for _try in range(40):
            s = float(rng.uniform(0.13, scale_hi))
            r = s * size
            m = r + size * 0.02
            cx, cy = float(rng.uniform(m, size - m)), float(rng.uniform(m, size - m))
            gaps = [np.hypot(cx - qx, cy - qy) - (r + qr) * 0.85 for qx, qy, qr in _xyr(poses, size)]
            gap = min(gaps, default=1.0)
            if gap > best_gap:
                best, best_gap = (cx, cy, s), gap
            if gap > 0:
                break
        cx, cy, s = best
        rot = float(rng.uniform(-20, 20))
        poses.append({"center": [round(cx, 3), round(cy, 3)], "scale": round(s, 4), "rotation": round(rot, 3)})
    return poses


def _xyr(poses: list[dict[str, Any]], size: int) -> list[tuple[float, float, float]]:
    return [(p["center"][0], p["center"][1], p["scale"] * size) for p in poses]


def paint_objects(
    canvas: np.ndarray, specs: list[dict[str, str]], poses: list[dict[str, Any]]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one-colour objects (``specs``: shape/color/pattern) in order onto ``canvas``; returns the label map
    (object ``i`` owns labels ``1 + 3i`` .. ``3 + 3i``) and each object's entry (attrs, visible mask, tight box)."""
    labels = np.zeros(canvas.shape[:2], np.uint8)
    for i, (spec, pose) in enumerate(zip(specs, poses)):
        paint_object(canvas, labels, 1 + 3 * i, spec["shape"], pose, COLORS[spec["color"]], spec["pattern"])
    return labels, [object_entry(labels, 1 + 3 * i, **s, **p) for i, (s, p) in enumerate(zip(specs, poses))]


def render_scene(
    seed: int,
    *,
    n_objects: int | None = None,
    objects: list[dict[str, str | None]] | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """1-3 objects on one background. ``objects`` may fix some objects' shape/color/pattern (None entries: sampled).

    ``Sample.objects`` holds each object's attrs, visible ``mask`` and tight ``box``; ``mask``/``box`` are the union.
    """
    seed, size = check_seed(seed), check_size(size)
    background, style = canonical("background", background), canonical("style", style)
    if objects is not None and n_objects is None:
        n_objects = len(objects)
    if n_objects is not None and not 1 <= int(n_objects) <= MAX_OBJECTS:
        raise ConfigError(f"a scene holds 1 to {MAX_OBJECTS} objects, got n_objects={n_objects}.")
    given = [{k: canonical(k, (o or {}).get(k)) for k in ("shape", "color", "pattern")} for o in (objects or [])][
        :MAX_OBJECTS
    ]
    rng = make_rng(seed)
    drawn_n = int(rng.integers(1, MAX_OBJECTS + 1))
    n = drawn_n if n_objects is None else int(n_objects)
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    specs = []
    for i in range(MAX_OBJECTS):  # always draw three so n does not shift the stream
        g = given[i] if i < len(given) else {}
        shape = pick(rng, SHAPES, g.get("shape"))
        color = pick(rng, tuple(COLORS), g.get("color"))
        specs.append({"shape": shape, "color": color, "pattern": pick(rng, PATTERNS, g.get("pattern"))})
    specs = specs[:n]
    poses = _layout(rng, n, size)
    canvas = make_background(background, rng, size)
    labels, entries = paint_objects(canvas, specs, poses)
    mask = labels > 0
    attrs = {"kind": "scene", "objects": [{**s, **p} for s, p in zip(specs, poses)], "n_objects": n}
    attrs |= {"background": background, "style": style, "template": template, "size": size, "seed": seed}
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=caption_for(attrs, template),
        attrs=attrs,
        mask=mask,
        box=bbox(mask),
        edges=edges_from_labels(labels),
        objects=entries,
    )
