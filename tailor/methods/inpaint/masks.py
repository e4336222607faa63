"""Random training masks (white = repaint): the whole image with some probability (SD-inpainting's 25%), else
1..``max_shapes`` boxes, ellipses (diffusers' inpainting training scripts) or thick polyline strokes (LaMa, Suvorov et
al. 2022), all drawn from one seeded generator per sample position so a resumed run draws the same masks."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _int(g: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def random_mask(g: torch.Generator, size: int, kinds: list[str], full_prob: float, max_shapes: int) -> torch.Tensor:
    """One ``1 x size x size`` float mask in {0, 1}."""
    if _u(g) < full_prob or not kinds:
        return torch.ones(1, size, size)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    kind = kinds[_int(g, 0, len(kinds) - 1)]
    for _ in range(_int(g, 1, max_shapes)):
        if kind == "strokes":
            width = max(1, round(_u(g, 0.06, 0.16) * size))
            x, y = _u(g) * size, _u(g) * size
            for _ in range(_int(g, 1, 4)):
                angle, length = _u(g, 0, 2 * math.pi), _u(g, 0.15, 0.5) * size
                nx = min(max(x + length * math.cos(angle), 0), size - 1)
                ny = min(max(y + length * math.sin(angle), 0), size - 1)
                draw.line([(x, y), (nx, ny)], fill=255, width=width)
                r = width / 2
                draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=255)  # round joints
                x, y = nx, ny
        else:
            w, h = _u(g, 0.15, 0.6) * size, _u(g, 0.15, 0.6) * size
            cx, cy = _u(g, w / 2, size - w / 2), _u(g, h / 2, size - h / 2)
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            (draw.rectangle if kind == "box" else draw.ellipse)(box, fill=255)
    return torch.from_numpy((np.asarray(img) >= 128).astype(np.float32))[None]
