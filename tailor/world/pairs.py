"""Object pairs and sequences: one object instance (shape, colours, pattern, decal) in several scenes.

An *instance* is a deterministic function of its id (:func:`instance_attrs`), like a face identity: shape, a body
colour and a second colour, a pattern (the base patterns and the subject-only ``halves``/``rings``) and maybe a
decal. :func:`render_view` draws it in one scene; :func:`render_pair` draws it in ``views`` scenes that differ in
pose (rotation up to 90 degrees either way), scale, background, render style and light (a brightness gain and a
directional ramp over the whole scene), with its box and mask per view: what AnyDoor / reference-UNet try-on /
ELITE-style training pairs need (the same object, placed into another scene). The caption names the instance's
look fully: "a photo of a red and white striped star with a black ring on grass".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.captions import BG_IN, BG_ON, STYLE_WORD, _a
from tailor.world.draw import edges_from_labels, pixel_grid
from tailor.world.objects import object_entry, paint_object
from tailor.world.sample import Sample
from tailor.world.styles import apply_style
from tailor.world.subjects import _decal_color
from tailor.world.vocab import (
    BACKGROUNDS,
    COLORS,
    DECALS,
    PATTERNS,
    SHAPES,
    STYLES,
    SUBJECT_PATTERNS,
    canonical,
    check_seed,
    check_size,
    derive_seed,
    make_rng,
)

INSTANCE_SALT = 4271
INSTANCE_LIMIT = 1 << 20
INSTANCE_PATTERNS: tuple[str, ...] = tuple(dict.fromkeys(PATTERNS + SUBJECT_PATTERNS))
MAX_VIEWS = 16
DECAL_WORD = {"dot": "a dot", "ring": "a ring", "bar": "a bar", "cross": "a cross"}


def check_instance(instance_id: int) -> int:
    if isinstance(instance_id, bool) or not isinstance(instance_id, int | np.integer):
        raise ConfigError(f"--instance must be an integer id from 0 to {INSTANCE_LIMIT - 1}, got {instance_id!r}.")
    if not 0 <= instance_id < INSTANCE_LIMIT:
        raise ConfigError(f"--instance must be an integer id from 0 to {INSTANCE_LIMIT - 1}, got {instance_id}.")
    return int(instance_id)


def instance_attrs(instance_id: int) -> dict[str, Any]:
    """The look of instance ``instance_id``: ``shape``, ``colors`` (body, second), ``pattern``, ``decal`` (or None)."""
    rng = make_rng(check_instance(instance_id), INSTANCE_SALT)
    names = list(COLORS)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    c1 = names[int(rng.integers(len(names)))]
    c2 = [c for c in names if c != c1][int(rng.integers(len(names) - 1))]
    pattern = INSTANCE_PATTERNS[int(rng.integers(len(INSTANCE_PATTERNS)))]
    decal = DECALS[int(rng.integers(len(DECALS)))] if rng.random() < 0.5 else None
    return {"instance_id": int(instance_id), "shape": shape, "colors": [c1, c2], "pattern": pattern, "decal": decal}


def describe(inst: dict[str, Any]) -> str:
    """The instance as a noun phrase without article: "red and white striped star with a black ring"."""
    c1, c2 = inst["colors"]
    if inst["pattern"] == "plain":
        words = f"{c1} {inst['shape']}"
    elif inst["pattern"] == "halves":
        words = f"half {c1} half {c2} {inst['shape']}"
    elif inst["pattern"] == "rings":
        words = f"{c1} and {c2} ringed {inst['shape']}"
    else:
        words = f"{c1} and {c2} {inst['pattern']} {inst['shape']}"
    if inst["decal"]:
        ink = "black" if _decal_color(tuple(inst["colors"]))[0] < 128 else "white"
        words += f" with {DECAL_WORD[inst['decal']].replace('a ', f'a {ink} ', 1)}"
    return words


def view_caption(inst: dict[str, Any], style: str, background: str, template: int = 0) -> str:
    if template % 2 == 0:
        return f"{STYLES[style]} {_a(describe(inst))} {BG_ON[background]}"
    return f"{STYLE_WORD[style]} of {_a(describe(inst))} {BG_IN[background]}"


def light_field(light: dict[str, float], size: int) -> np.ndarray:
    """Brightness gain times a linear ramp of ``strength`` along ``azimuth`` (degrees, 0 = light from the left)."""
    ys, xs = pixel_grid(size, size)
    a = np.deg2rad(light["azimuth"])
    t = -((xs / size - 0.5) * np.cos(a) + (ys / size - 0.5) * np.sin(a)) * 2.0  # +1 towards the light
    return (light["gain"] * (1.0 + light["strength"] * t)).astype(np.float32)


def render_view(
    instance: int | dict[str, Any],
    seed: int,
    *,
    background: str | None = None,
    style: str | None = None,
    scale: float | None = None,
    rotation: float | None = None,
    light: dict[str, float] | None = None,
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """Instance ``instance`` (an id or :func:`instance_attrs`) in one scene; what is not given comes from ``seed``."""
    inst = instance_attrs(instance) if not isinstance(instance, dict) else instance
    seed, size = check_seed(seed), check_size(size)
    background, style = canonical("background", background), canonical("style", style)
    rng = make_rng(seed, 43)
    drawn = {
        "background": BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        "style": list(STYLES)[int(rng.integers(len(STYLES)))],
        "scale": float(rng.uniform(0.18, 0.38)),
        "light": {
            "azimuth": round(float(rng.uniform(0, 360)), 2),
            "strength": round(float(rng.uniform(0.0, 0.3)), 4),
            "gain": round(float(rng.uniform(0.7, 1.2)), 4),
        },
        "template": int(rng.integers(2)),
    }
    background = background or drawn["background"]
    style = style or drawn["style"]
    s = float(scale) if scale is not None else drawn["scale"]
    light = light or drawn["light"]
    template = drawn["template"] if template is None else int(template)
    r = s * size
    m = r + size * 0.03
    pose = {
        "center": [round(float(rng.uniform(m, size - m)), 3), round(float(rng.uniform(m, size - m)), 3)],
        "scale": round(s, 4),
        "rotation": round(float(rng.uniform(-90, 90)) if rotation is None else float(rotation), 3),
    }
    canvas = make_background(background, rng, size)
    labels = np.zeros((size, size), np.uint8)
    c1, c2 = (COLORS[c] for c in inst["colors"])
    decal_c = _decal_color(tuple(inst["colors"]))
    paint_object(canvas, labels, 1, inst["shape"], pose, c1, inst["pattern"], c2, inst["decal"], decal_c)
    canvas *= light_field(light, size)[..., None]
    obj = object_entry(labels, 1, **inst, **pose)
    attrs = {"kind": "pair", **inst, "background": background, "style": style, "light": light, **pose}
    attrs |= {"template": template, "size": size, "seed": seed}
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=view_caption(inst, style, background, template),
        attrs=attrs,
        mask=obj["mask"],
        box=obj["box"],
        edges=edges_from_labels(labels),
        objects=[obj],
    )


def render_pair(
    seed: int,
    *,
    views: int = 2,
    instance: int | None = None,
    styles: tuple[str, ...] | None = None,
    size: int = 64,
) -> list[Sample]:
    """The same instance (drawn from ``seed`` unless given) in ``views`` scenes that all differ in background (while
    backgrounds last), style (while ``styles`` last; default: all five, the first view a photo), scale (spread over
    0.18-0.38 of the side), rotation and light. ``attrs["view"]`` numbers them."""
    seed, size = check_seed(seed), check_size(size)
    if isinstance(views, bool) or not isinstance(views, int | np.integer) or not 2 <= views <= MAX_VIEWS:
        raise ConfigError(f"--views must be an integer from 2 to {MAX_VIEWS}, got {views!r}.")
    rng = make_rng(seed, 44)
    drawn_id = int(rng.integers(INSTANCE_LIMIT))
    inst = instance_attrs(drawn_id if instance is None else check_instance(instance))
    styles = tuple(canonical("style", s) for s in (styles or STYLES))
    if not styles:
        raise ConfigError(f"styles is empty; give some of: {', '.join(STYLES)}.")
    bgs = [BACKGROUNDS[i] for i in rng.permutation(len(BACKGROUNDS))]
    order = [styles[i] for i in rng.permutation(len(styles))]
    if "photo" in order:  # the first view is a photo when photos are allowed (a clean reference)
        order.remove("photo")
        order.insert(0, "photo")
    scales = np.linspace(0.18, 0.38, views)[rng.permutation(views)] + rng.uniform(-0.02, 0.02, views)
    gains = np.linspace(0.8, 1.2, views)[rng.permutation(views)]
    turns = (rng.uniform(0, 180) + 180.0 * rng.permutation(views) / views) % 180.0 - 90.0  # spread over 180 degrees
    out = []
    for v in range(views):
        light = {
            "azimuth": round(float(rng.uniform(0, 360)), 2),
            "strength": round(float(rng.uniform(0.05, 0.3)), 4),
            "gain": round(float(gains[v]), 4),
        }
        s = render_view(
            inst,
            derive_seed(seed, v),
            background=bgs[v % len(bgs)],
            style=order[v % len(order)],
            scale=float(scales[v]),
            rotation=float(turns[v]),
            light=light,
            size=size,
        )
        s.attrs["view"] = v
        out.append(s)
    return out


class PairDataset(Dataset):
    """Training pairs: item ``i`` is two views of one instance, ``reference`` and ``target``, each a dict of
    ``pixel_values`` (3xHxW in [-1, 1]), ``mask`` (1xHxW), ``box`` (4 ints, x1/y1 exclusive) and ``caption``, plus
    ``attrs`` (the target's); a pure function of ``(seed, i)``."""

    def __init__(self, size: int = 64, seed: int = 0, length: int = 10000, styles: tuple[str, ...] | None = None):
        self.size, self.seed = check_size(size), check_seed(seed)
        if int(length) < 1:
            raise ConfigError(f"length must be a positive number of items, got {length!r}.")
        self.length, self.styles = int(length), styles

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a PairDataset of length {self.length}")
        ref, tgt = render_pair(derive_seed(self.seed, int(i) % self.length), styles=self.styles, size=self.size)
        return {"reference": _item(ref), "target": _item(tgt), "attrs": tgt.attrs}


def _item(s: Sample) -> dict[str, Any]:
    return {
        "pixel_values": torch.from_numpy(s.image).permute(2, 0, 1).float().div_(127.5).sub_(1.0),
        "mask": torch.from_numpy(s.mask).float()[None],
        "box": torch.tensor(s.box),
        "caption": s.caption,
    }
