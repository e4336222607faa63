"""Render styles applied to a finished clean render: photo, sketch, pixel art, watercolour, cartoon.

A style is a pure function of the clean image and a seeded generator, so objects, faces and scenes
all share them, and ground truth (masks, boxes, edges, keypoints) is computed before any style runs.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from tailor.world.draw import pixel_grid, value_noise
from tailor.world.vocab import STYLES

Style = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _gradient(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """A linear brightness ramp in a random direction, 1 +- ``strength``, float32 HxW."""
    a = rng.random() * 2 * np.pi
    ys, xs = pixel_grid(h, w)
    t = ((xs / w - 0.5) * np.cos(a) + (ys / h - 0.5) * np.sin(a)) * 2.0
    return 1.0 + strength * t


def photo(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild directional lighting and sensor noise over the plain render."""
    h, w = img.shape[:2]
    light = _gradient(rng, h, w, 0.06 * rng.random())
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 2.5
    return _u8(img.astype(np.float32) * light[..., None] + noise)


def sketch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pencil drawing on paper: colour-dodge of the grey image by its blurred negative, grain and a light tint."""
    h = img.shape[0]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = max(3, (h // 16) | 1)
    blur = cv2.GaussianBlur(255.0 - gray, (k, k), 0)
    dodge = np.minimum(255.0, gray * 255.0 / np.maximum(255.0 - blur, 1.0))
    lines = 255.0 - (255.0 - dodge) * 2.4  # darken strokes so they read at 64 px
    lines *= 1.0 - 0.06 * rng.random(lines.shape, dtype=np.float32)
    # a faint tint of the original colours keeps colour names weakly visible, as in coloured pencil
    tint = 0.7 + 0.3 * img.astype(np.float32) * (1.0 / 255.0)
    return _u8(np.clip(lines, 0, 255)[..., None] * tint)


def pixel(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel art: area-downsample to ~3-pixel cells (at 64 px), quantise to 6 levels per channel, upsample nearest."""
    h, w = img.shape[:2]
    b = max(2, round(h / 21))
    small = cv2.resize(img, (-(-w // b), -(-h // b)), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = _u8(np.round(small / 51.0) * 51.0)
    return np.repeat(np.repeat(small, b, axis=0), b, axis=1)[:h, :w]


def watercolor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Watercolour: colours bleed (noise-displaced), soften and lighten, pool at edges, on textured paper."""
    h, w = img.shape[:2]
    amp = max(1.0, h / 40.0)
    ys, xs = pixel_grid(h, w)
    dx = (value_noise(rng, h, w, 6) - 0.5) * 2 * amp
    dy = (value_noise(rng, h, w, 6) - 0.5) * 2 * amp
    bled = cv2.remap(img, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    soft = cv2.GaussianBlur(bled, (0, 0), max(0.8, h / 64.0)).astype(np.float32)
    gray = cv2.cvtColor(_u8(soft), cv2.COLOR_RGB2GRAY).astype(np.float32)
    edge = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3))
    pooled = soft * (1.0 - np.clip(edge / 255.0, 0, 0.35))[..., None]
    paper = 1.0 - 0.07 * value_noise(rng, h, w, max(4, h // 3)) - 0.04 * rng.random((h, w), dtype=np.float32)
    washed = pooled * 0.72 + np.asarray((250, 246, 236), np.float32) * 0.28
    return _u8(washed * paper[..., None])


def cartoon(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cartoon: flattened colours (median filters + posterise) and thick dark outlines."""
    h = img.shape[0]
    flat = cv2.medianBlur(img, 3 if h <= 96 else 5)
    gray = cv2.GaussianBlur(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    outline = cv2.Canny(gray, 90, 200)
    outline = cv2.dilate(outline, np.ones((2, 2) if h <= 96 else (3, 3), np.uint8))
    f = flat.astype(np.float32)
    v = np.maximum(f.max(axis=2, keepdims=True), 1.0)
    # posterise brightness only (channel-wise rounding would shift dark hues, e.g. brown skin to olive)
    out = _u8(f * (np.maximum(np.round(v / 40.0), 0.5) * 40.0 / v) * 1.05 + 8.0)
    out[outline > 0] = (20, 20, 20)
    return out


STYLE_FUNCS: dict[str, Style] = {
    "photo": photo,
    "sketch": sketch,
    "pixel": pixel,
    "watercolor": watercolor,
    "cartoon": cartoon,
}
assert set(STYLE_FUNCS) == set(STYLES)


def apply_style(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Render ``img`` (HxWx3 uint8 or float RGB) in ``style``; returns contiguous HxWx3 uint8."""
    if img.dtype != np.uint8:
        img = _u8(img)
    return np.ascontiguousarray(STYLE_FUNCS[style](img, rng))
