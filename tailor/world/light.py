"""Light: objects, faces and scenes rendered as albedo x the sum of lights in linear space (IC-Light's ground truth).

A :class:`LitScene` holds a linear-RGB albedo, per-pixel normals and heights (a dome over each object's or face's
mask; the ground is flat, facing the viewer) and the foreground mask. Each :class:`Light` (``ambient``,
``directional`` with a unit direction towards the light, ``point`` with a position and inverse-square falloff; each
with a linear colour and an intensity) contributes ``albedo * colour * intensity * max(0, n . l) * visibility``
(Lambert; visibility: the foreground's soft cast shadow on the ground). :meth:`LitScene.linear` sums the
contributions in order, so for two lights ``linear([a]) + linear([b]) == linear([a, b])`` exactly. Only then comes
the display transform (clip to [0, 1], sRGB encoding, 8 bits, sensor noise for photos).

``Sample.extras`` holds the albedo (sRGB, unlit), the foreground on grey (IC-Light's fc input), the background lit
by the same lights without the subject (IC-Light's fbc background) and the foreground mask; ``attrs["lights"]`` the
light parameters. Captions name the non-ambient lights: ``a photo of a red star on grass, lit from the left by warm
light``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.captions import N_TEMPLATES, caption_for
from tailor.world.draw import bbox, edges_from_labels, place, poly_alpha, unit_polygon
from tailor.world.faces import L_NECK, L_SHIRT, SHIRTS, draw_face
from tailor.world.identity import identity_features
from tailor.world.objects import object_entry, paint_object, sample_pose
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

SUBJECTS: tuple[str, ...] = ("object", "face", "scene")
KINDS: tuple[str, ...] = ("ambient", "directional", "point")
#: light colour word -> linear RGB
LIGHT_COLORS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "warm": (1.0, 0.62, 0.3),
    "cool": (0.5, 0.72, 1.0),
    "red": (1.0, 0.18, 0.12),
    "green": (0.25, 1.0, 0.3),
    "blue": (0.22, 0.38, 1.0),
    "purple": (0.7, 0.25, 1.0),
}
#: where a light comes from -> image-plane direction towards it (x right, y down); "front" is the viewer's side
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "top": (0.0, -1.0),
    "bottom": (0.0, 1.0),
    "top left": (-0.7071, -0.7071),
    "top right": (0.7071, -0.7071),
    "bottom left": (-0.7071, 0.7071),
    "bottom right": (0.7071, 0.7071),
    "front": (0.0, 0.0),
}
OBJECT_HEIGHT = 0.1  # how far above the ground an object's shadow-casting top sits, as a fraction of the side


@dataclass(frozen=True)
class Light:
    """One light. ``color``: linear RGB in [0, 1]; ``direction`` (directional): unit vector towards the light, x right,
    y down, z towards the viewer; ``position`` (point): (x, y) as fractions of the image side, z height above the
    ground in image sides; ``name``/``side``: the colour word and the side it comes from (for captions)."""

    kind: str
    color: tuple[float, float, float]
    intensity: float
    direction: tuple[float, float, float] | None = None
    position: tuple[float, float, float] | None = None
    name: str = "white"
    side: str = "front"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Light:
        tup = {k: tuple(float(x) for x in d[k]) for k in ("color", "direction", "position") if d.get(k) is not None}
        return cls(d["kind"], intensity=float(d["intensity"]), name=d.get("name", "white"),
                   side=d.get("side", "front"), **tup)  # fmt: skip


def directional(side: str, name: str, intensity: float = 1.0, elevation: float = 35.0) -> Light:
    """A directional light from ``side`` (a :data:`DIRECTIONS` key) at ``elevation`` degrees above the ground."""
    dx, dy = DIRECTIONS[side]
    e = math.radians(90.0 if side == "front" else elevation)
    d = (round(dx * math.cos(e), 6), round(dy * math.cos(e), 6), round(math.sin(e), 6))
    return Light("directional", LIGHT_COLORS[name], float(intensity), direction=d, name=name, side=side)


def point(side: str, name: str, intensity: float = 1.0, height: float = 0.35, reach: float = 0.55) -> Light:
    """A point light ``reach`` image sides from the centre towards ``side``, ``height`` sides above the ground."""
    dx, dy = DIRECTIONS[side]
    p = (round(0.5 + reach * dx, 6), round(0.5 + reach * dy, 6), float(height))
    return Light("point", LIGHT_COLORS[name], float(intensity), position=p, name=name, side=side)


def ambient(name: str, intensity: float = 0.15) -> Light:
    return Light("ambient", LIGHT_COLORS[name], float(intensity), name=name)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The display transform: clip to [0, 1], then the sRGB encoding (float in [0, 1])."""
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _dome(mask: np.ndarray) -> np.ndarray:
    """A rounded height field over ``mask`` (pixels): a quarter circle from the rim up to the inner distance max."""
    if not mask.any():
        return np.zeros(mask.shape, np.float64)
    d = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5).astype(np.float64)
    r = max(1.0, float(d.max()))
    t = np.clip(d / r, 0.0, 1.0)
    return r * np.sqrt(1.0 - (1.0 - t) ** 2) * mask


@dataclass
class LitScene:
    """What lights act on: linear albedo (HxWx3), unit normals (HxWx3), heights (HxW, pixels), foreground mask."""

    albedo: np.ndarray
    normal: np.ndarray
    height: np.ndarray
    fg: np.ndarray

    @classmethod
    def from_parts(cls, albedo_srgb: np.ndarray, parts: list[np.ndarray]) -> LitScene:
        """Albedo (sRGB, 0..255) and the visible mask of each raised part (object / face), one dome each."""
        h = np.zeros(albedo_srgb.shape[:2], np.float64)
        for m in parts:
            h += _dome(m)
        h = cv2.GaussianBlur(h, (0, 0), 0.7)
        gy, gx = np.gradient(h)
        n = np.stack([-gx, -gy, np.ones_like(h)], -1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        fg = np.any(parts, axis=0) if parts else np.zeros(h.shape, bool)
        return cls(srgb_to_linear(np.asarray(albedo_srgb, np.float64) / 255.0), n, h, fg)

    def _towards(self, light: Light) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel unit vector to ``light`` and its falloff (1 for directional lights)."""
        hh, ww = self.height.shape
        if light.kind == "directional":
            ones = np.ones((hh, ww), np.float64)
            return np.broadcast_to(np.asarray(light.direction, np.float64), (hh, ww, 3)), ones
        size = float(min(hh, ww))
        ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float64)
        px, py, pz = light.position
        v = np.stack([px * size - xs, py * size - ys, pz * size - self.height], -1)
        d2 = (v**2).sum(-1)
        return v / np.sqrt(d2)[..., None], 0.3 / (0.06 + d2 / size**2)  # inverse square, finite at the lamp

    def _shadow(self, light: Light) -> np.ndarray:
        """Visibility (HxW in [0, 1]): the foreground's soft shadow on the ground, cast away from the light."""
        if not self.fg.any():
            return np.ones(self.fg.shape)
        size = float(min(self.fg.shape))
        if light.kind == "directional":
            lx, ly, lz = light.direction
        else:
            ys, xs = np.nonzero(self.fg)
            px, py, pz = light.position
            v = np.array([px * size - xs.mean(), py * size - ys.mean(), pz * size])
            lx, ly, lz = v / np.linalg.norm(v)
        k = OBJECT_HEIGHT * size / max(lz, 0.2)
        dx, dy = float(np.clip(-lx * k, -0.35 * size, 0.35 * size)), float(np.clip(-ly * k, -0.35 * size, 0.35 * size))
        shifted = cv2.warpAffine(self.fg.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), self.fg.shape[::-1])
        soft = cv2.GaussianBlur(shifted, (0, 0), max(0.8, size / 45)).astype(np.float64)
        return np.where(self.fg, 1.0, 1.0 - 0.75 * soft)

    def radiance(self, light: Light) -> np.ndarray:
        """One light's contribution: linear HxWx3 float64."""
        if light.kind not in KINDS:
            raise ConfigError(f"unknown light kind {light.kind!r}; valid kinds are: {', '.join(KINDS)}.")
        c = np.asarray(light.color, np.float64) * light.intensity
        if light.kind == "ambient":
            return self.albedo * c
        l, falloff = self._towards(light)
        lambert = np.clip((self.normal * l).sum(-1), 0.0, None) * falloff * self._shadow(light)
        return self.albedo * c * lambert[..., None]

    def linear(self, lights: list[Light]) -> np.ndarray:
        """The linear image: the lights' contributions summed in order (so it is additive in the lights)."""
        out = np.zeros(self.albedo.shape, np.float64)
        for light in lights:
            out = out + self.radiance(light)
        return out


def sample_lights(rng: np.random.Generator, n: int | None = None) -> list[Light]:
    """An ambient light and 1-2 directional or point lights of random colour, side and intensity."""
    u = rng.random(16)
    names, sides = list(LIGHT_COLORS), [s for s in DIRECTIONS if s != "front"]
    lights = [ambient(names[int(u[0] * len(names))] if u[1] < 0.4 else "white", 0.08 + 0.14 * u[2])]
    count = (1 + int(u[3] < 0.4)) if n is None else n
    for j in range(count):
        side = sides[int(u[4 + 4 * j] * len(sides))]
        if j == 1:  # a second light from another side
            side = sides[(sides.index(lights[1].side) + 1 + int(u[8] * (len(sides) - 1))) % len(sides)]
        name = names[int(u[5 + 4 * j] * len(names))]
        inten = (0.9 + 0.7 * u[6 + 4 * j]) * (1.0 if j == 0 else 0.6)
        if u[7 + 4 * j] < 0.6:
            lights.append(directional(side, name, inten, elevation=25 + 30 * u[12 + j]))
        else:
            lights.append(point(side, name, inten * 1.3, height=0.25 + 0.2 * u[12 + j]))
    return lights


def light_phrase(lights: list[Light]) -> str:
    """``lit from the left by warm light and from the top by blue light`` (ambient lights are not named)."""
    parts = [
        f"from the {lt.side} by {lt.name} {'light' if lt.kind == 'directional' else 'lamplight'}"
        for lt in lights
        if lt.kind != "ambient"
    ]
    return "lit " + " and ".join(parts) if parts else "in soft light"


_LIT = re.compile(r"from the (top left|top right|bottom left|bottom right|left|right|top|bottom|front)"
                  r"(?: by (?:a |an )?(\w+) (?:light|lamplight|lamp))?")  # fmt: skip


def parse_lights(prompt: str) -> list[Light] | None:
    """Lights named in a prompt (``lit from the left by warm light and from the top by blue lamplight``), or None."""
    found = _LIT.findall(str(prompt).lower())
    if not found:
        return None
    lights = [ambient("white")]
    for i, (side, name) in enumerate(found[:3]):
        name = name or "white"
        if name not in LIGHT_COLORS:
            raise ConfigError(f"unknown light colour {name!r}; valid light colours are: {', '.join(LIGHT_COLORS)}.")
        inten = 1.2 if i == 0 else 0.7
        lamp = re.search(rf"from the {side} by (?:a |an )?{name} lamp", prompt.lower()) is not None
        lights.append(point(side, name, inten * 1.3) if lamp else directional(side, name, inten))
    return lights


def _paint(albedo: np.ndarray, labels: np.ndarray, label: int, spec: dict[str, Any], pose: dict[str, Any]) -> None:
    """Composite one object onto the albedo without :func:`paint_object`'s baked shadow (painted over black, where
    the shadow multiplies zero, and blended with its own coverage)."""
    size = labels.shape[0]
    layer = np.zeros_like(albedo)
    paint_object(layer, labels, label, spec["shape"], pose, COLORS[spec["color"]], spec["pattern"])
    (cx, cy), r, rot = pose["center"], pose["scale"] * size, pose["rotation"]
    a = poly_alpha(place(unit_polygon(spec["shape"]), cx, cy, r, rot), size, size)[..., None]
    albedo *= 1.0 - a
    albedo += layer


def _layout(rng: np.random.Generator, n: int, size: int) -> list[dict[str, Any]]:
    poses: list[dict[str, Any]] = []
    for _ in range(n):
        for _try in range(30):
            p = sample_pose(rng, size, scale=(0.14, 0.22 if n > 1 else 0.32))
            if all(math.dist(p["center"], q["center"]) > (p["scale"] + q["scale"]) * size * 0.9 for q in poses):
                break
        poses.append(p)
    return poses


def render_lit(
    seed: int,
    *,
    subject: str | None = None,
    lights: list[Light] | None = None,
    shape: str | None = None,
    color: str | None = None,
    pattern: str | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """An object, a face or a 2-3 object scene on a background, lit by ``lights`` (None: drawn from ``seed``)."""
    seed, size = check_seed(seed), check_size(size)
    if subject is not None and subject not in SUBJECTS:
        raise ConfigError(f"unknown lit subject {subject!r}; valid subjects are: {', '.join(SUBJECTS)}.")
    shape, color = canonical("shape", shape), canonical("color", color)
    pattern, background = canonical("pattern", pattern), canonical("background", background)
    style = canonical("style", style)
    rng = make_rng(seed)
    subject = pick(rng, SUBJECTS, subject)
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    drawn_lights = sample_lights(rng)
    lights = drawn_lights if lights is None else list(lights)
    specs = [
        {"shape": pick(rng, SHAPES, shape), "color": pick(rng, tuple(COLORS), color),
         "pattern": pick(rng, PATTERNS, pattern)} for _ in range(3)
    ]  # fmt: skip
    base = make_background(background, rng, size)
    albedo = base.copy()
    labels = np.zeros((size, size), np.uint8)
    attrs: dict[str, Any] = {"kind": "light", "subject": subject, "background": background, "style": style}
    objects: list[dict[str, Any]] = []
    if subject == "face":
        identity = int(rng.integers(1 << 20))
        f = identity_features(identity, None)
        u = rng.random(7)
        nz = {"center": [round(size * (0.42 + 0.16 * u[0]), 4), round(size * (0.46 + 0.1 * u[1]), 4)],
              "scale": round(0.25 + 0.05 * u[2], 4), "roll": round(-8 + 16 * u[3], 4),
              "yaw": round(-0.6 + 1.2 * u[4], 4), "smile": round(-0.4 + 1.4 * u[5], 4), "eye_open": 0.9,
              "shirt": int(u[6] * len(SHIRTS))}  # fmt: skip
        img = np.clip(albedo + 0.5, 0, 255).astype(np.uint8)
        keypoints, face = draw_face(img, labels, f, nz, size)
        albedo = img.astype(np.float32)
        body = (labels == L_SHIRT) | (labels == L_NECK)
        parts = [body, (labels > 0) & ~body]  # the head its own dome: one over the silhouette dips at the neck
        objects.append({"kind": "face", "identity": identity, "cls": f["cls"], "box": bbox(face), "mask": face})
        attrs |= {"identity": identity, "cls": f["cls"], **nz}
        cap_attrs = {"kind": "face", "cls": f["cls"], "background": background, "style": style}
    else:
        n = 1 if subject == "object" else 2 + int(rng.random() < 0.4)
        poses = _layout(rng, n, size)
        for i, (spec, pose) in enumerate(zip(specs[:n], poses)):
            _paint(albedo, labels, 1 + 3 * i, spec, pose)
        objects = [object_entry(labels, 1 + 3 * i, **s, **p) for i, (s, p) in enumerate(zip(specs[:n], poses))]
        parts = [o["mask"] for o in objects]
        keypoints = None
        if subject == "object":
            attrs |= {**specs[0], **poses[0]}
            cap_attrs = {"kind": "object", **specs[0], "background": background, "style": style}
        else:
            attrs["objects"] = [{**s, **p} for s, p in zip(specs[:n], poses)]
            cap_attrs = {"kind": "scene", "objects": specs[:n], "background": background, "style": style}
    scene = LitScene.from_parts(albedo, parts)
    env = LitScene.from_parts(base, [])  # the same ground without the subject, under the same lights
    attrs |= {"template": template, "size": size, "seed": seed, "lights": [lt.to_dict() for lt in lights]}
    disp = linear_to_srgb(scene.linear(lights)) * 255.0
    if style == "photo":  # sensor noise only: photo's random brightness ramp would add a light the labels lack
        image = np.clip(disp + rng.standard_normal(disp.shape) * 2.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        image = apply_style(disp.astype(np.float32), style, rng)
    mask = scene.fg
    grey = np.full_like(albedo, 127.0)
    extras = {
        "albedo": _u8(albedo),
        "foreground": _u8(np.where(mask[..., None], albedo, grey)),
        "background": _u8(linear_to_srgb(env.linear(lights)) * 255.0),
        "mask": mask.astype(np.uint8) * 255,
    }
    return Sample(
        image=image,
        caption=f"{caption_for(cap_attrs, template)}, {light_phrase(lights)}",
        attrs=attrs,
        mask=mask,
        box=bbox(mask),
        edges=edges_from_labels(labels),
        objects=objects,
        keypoints=keypoints,
        extras=extras,
    )


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x) + 0.5, 0, 255).astype(np.uint8)
