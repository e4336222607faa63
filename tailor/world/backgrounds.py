"""Procedural background textures: grass, sand, snow, water, brick, wood, sky.

Each is a distinct base colour plus a texture built from a few smooth noise fields (coarse random grids
resized by OpenCV) and closed-form stripes, so one 64x64 background costs tens of microseconds. Feature
sizes are relative to the image, so a larger ``size`` shows the same scene at a higher resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from tailor.world.draw import pixel_grid, value_noise

Texture = Callable[[np.random.Generator, int, int], np.ndarray]


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two RGB colours by ``t`` (HxW) -> float32 HxWx3."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = pixel_grid(h, w)
    return xs / w, ys / h


def grass(rng, h, w):
    blotch = value_noise(rng, h, w, 5)
    blades = cv2.resize(rng.random((max(2, h // 5), w), dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    fine = rng.random((h, w), dtype=np.float32)
    img = _mix((60, 125, 45), (130, 170, 70), blotch)
    img *= (0.78 + 0.38 * blades + 0.08 * fine)[..., None]
    return img


def sand(rng, h, w):
    x, y = _grid(h, w)
    warp = value_noise(rng, h, w, 3)
    ripples = np.sin(2 * np.pi * (y * 5.0 + x * 0.8 + 0.9 * warp + rng.random()))
    grain = rng.random((h, w), dtype=np.float32)
    img = _mix((205, 178, 128), (232, 210, 160), value_noise(rng, h, w, 4))
    img *= (0.93 + 0.045 * ripples + 0.08 * grain)[..., None]
    return img


def snow(rng, h, w):
    img = _mix((246, 248, 252), (198, 212, 232), value_noise(rng, h, w, 4) ** 2)
    img *= (0.97 + 0.04 * rng.random((h, w), dtype=np.float32))[..., None]
    sparkle = rng.random((h, w)) > 0.985
    img[sparkle] = 255.0
    return img


def water(rng, h, w):
    x, y = _grid(h, w)
    warp = value_noise(rng, h, w, 4, 3)
    waves = np.sin(2 * np.pi * (y * 7.0 + 1.4 * warp + 0.3 * np.sin(2 * np.pi * x * 2 + rng.random() * 6)))
    img = _mix((28, 78, 140), (62, 130, 185), y + 0.4 * warp - 0.2)
    crest = np.clip((waves - 0.75) * 4.0, 0.0, 1.0)
    img += crest[..., None] * np.asarray((90, 90, 70), np.float32)
    return img


def brick(rng, h, w):
    rows = 8
    bh, bw = h / rows, w / 4
    ys, xs = pixel_grid(h, w)
    ys = ys + rng.random() * bh
    row = np.floor(ys / bh).astype(np.int32)
    xo = xs + (row % 2) * (bw / 2) + rng.random() * bw
    col = np.floor(xo / bw).astype(np.int32)
    tone = rng.random((rows + 2, 8), dtype=np.float32)[row % (rows + 2), col % 8]
    img = _mix((140, 55, 40), (180, 88, 60), tone)
    img *= (0.92 + 0.1 * rng.random((h, w), dtype=np.float32))[..., None]
    mortar = (ys - row * bh < max(1.0, bh * 0.16)) | (xo - col * bw < max(1.0, bw * 0.08))
    img[mortar] = (196, 190, 178)
    return img


def wood(rng, h, w):
    x, y = _grid(h, w)
    warp = cv2.resize(rng.random((max(2, h // 3), 3), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = np.sin(2 * np.pi * (y * 11.0 + 1.3 * warp + 0.15 * x))
    img = _mix((150, 98, 55), (190, 135, 85), value_noise(rng, h, w, 3))
    img *= (0.92 + 0.07 * grain)[..., None]
    plank = h / 4
    seam = ((np.arange(h, dtype=np.float32) + rng.random() * plank) % plank) < max(1.0, plank * 0.05)
    img[seam] *= 0.6
    return img


def sky(rng, h, w):
    x, y = _grid(h, w)
    img = _mix((70, 135, 220), (165, 205, 245), y)
    clouds = value_noise(rng, h, w, 4, 5) * 0.7 + value_noise(rng, h, w, 8) * 0.3
    c = np.clip((clouds - 0.55) * 4.0, 0.0, 1.0)
    img += c[..., None] * (np.asarray((250, 252, 255), np.float32) - img)
    return img


TEXTURES: dict[str, Texture] = {
    "grass": grass,
    "sand": sand,
    "snow": snow,
    "water": water,
    "brick": brick,
    "wood": wood,
    "sky": sky,
}


def background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` background texture as float32 HxWx3 RGB in [0, 255]."""
    return np.clip(TEXTURES[name](rng, size, size), 0.0, 255.0)
