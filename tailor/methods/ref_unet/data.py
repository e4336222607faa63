"""World try-on items (the IDM-VTON analogue): a scene with one object, the object's region masked, a reference
object, and the exact target: the same scene with the object re-rendered in the reference's colours, pattern and
decal.

A world object instance (:mod:`tailor.world.pairs`) has a shape, two colours, a pattern and maybe a decal. Item ``i``
draws a *person* instance ``A`` (the scene's object: its shape and pose stay) and a *garment* instance ``B`` (the
reference: its look moves); the target instance is ``A`` with ``B``'s colours, pattern and decal. Scene and target are
rendered from one seed with everything but the object's look fixed, so they differ only on the object (and its
one-pixel anti-aliased rim), which the mask covers: the object's box grown by ``margin`` pixels (a coarse mask, as
try-on's agnostic masks are). The reference is ``B`` in its own shape, upright and large, as a photo on another
background (a product shot). The *shape map* (DensePose's place) is the object's silhouette, white on black.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.core.images import to_tensor
from tailor.world.pairs import INSTANCE_LIMIT, instance_attrs, render_view, view_caption
from tailor.world.vocab import derive_seed, make_rng

STYLE = "photo"


def box_mask(box, size: int, margin: int) -> np.ndarray:
    """``size x size`` uint8 mask (255 = repaint): ``box`` (x0, y0, x1, y1; x1 / y1 exclusive) grown by ``margin``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    m = np.zeros((size, size), np.uint8)
    m[max(0, y0 - margin) : min(size, y1 + margin), max(0, x0 - margin) : min(size, x1 + margin)] = 255
    return m


def render_tryon(seed: int, size: int = 64, margin: int = 3) -> dict[str, Any]:
    """One try-on case as uint8 arrays (``scene``, ``reference``, ``target``, ``shape``: HxWx3; ``mask``: HxW, 255 =
    repaint) plus ``caption`` (the target's) and the three instances."""
    rng = make_rng(seed, 61)
    a = instance_attrs(int(rng.integers(INSTANCE_LIMIT)))
    while True:  # a garment that changes the look (another colour pair or pattern)
        b = instance_attrs(int(rng.integers(INSTANCE_LIMIT)))
        if (b["colors"], b["pattern"], b["decal"]) != (a["colors"], a["pattern"], a["decal"]):
            break
    target_inst = {**a, "colors": list(b["colors"]), "pattern": b["pattern"], "decal": b["decal"]}
    scene = render_view(a, seed, style=STYLE, size=size)
    target = render_view(target_inst, seed, style=STYLE, size=size)
    ref_bg = [bg for bg in ("sky", "snow", "sand") if bg != scene.attrs["background"]][0]
    reference = render_view(b, derive_seed(seed, 1), style=STYLE, background=ref_bg, rotation=0.0, scale=0.36,
                            size=size)  # fmt: skip
    silhouette = (scene.mask > 0).astype(np.uint8) * 255
    return {
        "scene": scene.image,
        "reference": reference.image,
        "target": target.image,
        "mask": box_mask(scene.box, size, margin),
        "shape": np.repeat(silhouette[..., None], 3, axis=-1),
        "caption": view_caption(target_inst, STYLE, scene.attrs["background"], scene.attrs["template"]),
        "instances": (a, b, target_inst),
    }


class TryOnItems(Dataset):
    """Item ``i``: :func:`render_tryon` of ``derive_seed(seed, i)`` as tensors: ``pixel_values`` (the target, 3xHxW
    in [-1, 1]), ``caption``, ``tryon_mask`` (1xHxW in {0, 1}), ``masked_pixel_values`` (the scene with the mask
    zeroed: ``scene * (mask < 0.5)``), ``shape_pixel_values`` and ``ref_pixel_values``; a pure function of
    ``(seed, i)``."""

    def __init__(self, length: int, size: int, seed: int, margin: int = 3):
        self.length, self.size, self.seed, self.margin = int(length), int(size), int(seed), int(margin)

    def __len__(self) -> int:
        return self.length

    def case(self, i: int) -> dict[str, Any]:
        return render_tryon(derive_seed(self.seed, int(i) % self.length), self.size, self.margin)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = self.case(i)
        mask = torch.from_numpy(c["mask"] >= 128).float()[None]
        scene = to_tensor(c["scene"])
        return {
            "pixel_values": to_tensor(c["target"]),
            "caption": c["caption"],
            "tryon_mask": mask,
            "masked_pixel_values": scene * (mask < 0.5),
            "shape_pixel_values": to_tensor(c["shape"]),
            "ref_pixel_values": to_tensor(c["reference"]),
        }
