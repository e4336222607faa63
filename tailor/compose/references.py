"""Reference inputs from paths: images (loaded), condition maps (extracted, or ready maps used as they are)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def load_images(paths: list[str]) -> list[Image.Image]:
    """Each path as an RGB image (InputError naming the file when it is not one)."""
    from tailor.core.images import load_image

    return [load_image(p) for p in paths]


def condition_image(kind: str, path: str, size: tuple[int, int], ready_map: bool) -> Image.Image:
    """The ``kind`` condition map (canny, seg, hf, layout) of the image at ``path``, resized to ``size`` = (w, h)
    first; with ``ready_map`` the file itself is the map."""
    from tailor.conditions import extract
    from tailor.core.images import load_image

    img = load_image(path)
    if ready_map:
        return img
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.BICUBIC)
    return Image.fromarray(extract(kind, np.asarray(img)))
