"""The :class:`Sample` every world renderer returns: an image with its caption and exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class Sample:
    """One rendered image and its ground truth.

    - ``image``: HxWx3 uint8 RGB.
    - ``caption``: the text a model is trained with (faces: the identity is not in it).
    - ``attrs``: JSON-able attributes (kind, shape/colour/pattern/background/style, pose, identity, ...).
    - ``mask``: HxW bool; the object (union of objects for scenes; the face region for faces).
    - ``box``: ``(x0, y0, x1, y1)`` ints, tight around ``mask``, x1/y1 exclusive (``mask[y0:y1, x0:x1]``).
    - ``edges``: HxW uint8 0/255 outlines of the drawn object(s) and their parts, before the style.
    - ``objects``: one dict per foreground item (attrs + ``box`` + ``mask``).
    - ``keypoints``: faces only, (5, 2) float32 pixel ``(x, y)`` of left eye, right eye, nose tip, left and
      right mouth corner ("left" = smaller x in the image, InstantID / insightface order); else None.
    - ``extras``: named extra images (HxW or HxWx3 uint8: a lit render's albedo, a glyph image, ...) that
      ``tailor world`` writes beside the image as ``<stem>_<name>.png``.
    """

    image: np.ndarray
    caption: str
    attrs: dict[str, Any]
    mask: np.ndarray
    box: tuple[int, int, int, int]
    edges: np.ndarray
    objects: list[dict[str, Any]] = field(default_factory=list)
    keypoints: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def labels(self) -> dict[str, Any]:
        """Everything but the pixel arrays, JSON-able: caption, attrs, box, keypoints, objects (without masks)."""
        return {
            "caption": self.caption,
            "attrs": self.attrs,
            "box": [int(v) for v in self.box],
            "keypoints": None if self.keypoints is None else np.round(self.keypoints, 3).tolist(),
            "objects": [
                {k: ([int(x) for x in v] if k == "box" else v) for k, v in o.items() if k != "mask"}
                for o in self.objects
            ],
        }

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)
