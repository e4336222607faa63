"""Condition extractors: an RGB image (numpy uint8 HxWx3) or ground-truth labels in, a condition image out.

The condition images are the ones the spatial-control papers train on:

- ``canny``: OpenCV Canny edges (ControlNet, Zhang et al. 2023: thresholds 100/200 by default, drawn white on black).
- ``sobel_hf``: the high-frequency map of AnyDoor (Chen et al. 2023): ``|Sobel_x| + |Sobel_y|`` of the grey image,
  normalised to [0, 255].
- ``segmentation_map``: a label map painted with one colour per class (ADE20K-style palette, class 0 = black).
- ``layout_image``: boxes painted as filled, class-coloured rectangles with a white outline (ODGEN / GLIGEN-style
  layout conditions as an image).
- ``keypoints_image``: InstantID's face-keypoint image: 5 coloured points (eyes, nose, mouth corners) joined to the
  nose by coloured limbs on black (``draw_kps`` of the InstantID repository).
- ``soft_edges``: a differentiable Sobel-magnitude edge map in torch, for reward losses (ControlNet++, Li et al. 2024).

Every function returns uint8 HxWx3 (the differentiable one a float tensor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tailor.errors import InputError

#: InstantID's keypoint colours (RGB): left eye, right eye, nose, left / right mouth corner
KEYPOINT_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
#: InstantID's limbs: each eye and mouth corner joined to the nose
KEYPOINT_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))


def as_rgb(image, what: str = "image") -> np.ndarray:
    """Check and normalise an image to uint8 HxWx3 (grey HxW is repeated; floats in [0, 1] are scaled)."""
    if hasattr(image, "convert"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be an HxWx3 uint8 array or a PIL image, not {type(image).__name__}.")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise InputError(f"{what} has shape {image.shape}; expected HxWx3.")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
            image = image * 255.0
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def _grey3(channel: np.ndarray) -> np.ndarray:
    return np.repeat(channel[..., None], 3, axis=2)


def canny(image, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges (white on black), as ControlNet's canny model is trained on."""
    import cv2  # lazily: OpenCV costs ~16 MB of resident memory in every process that imports this

    if not 0 <= low <= high:
        raise InputError(f"canny thresholds must satisfy 0 <= low <= high; got {low}/{high}.")
    grey = cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY)
    return _grey3(cv2.Canny(grey, low, high))


def sobel_hf(image) -> np.ndarray:
    """AnyDoor's high-frequency map ``|Sobel_x| + |Sobel_y|`` of the grey image, scaled to [0, 255]."""
    import cv2  # lazily: OpenCV costs ~16 MB of resident memory in every process that imports this

    grey = cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.abs(gx) + np.abs(gy)
    peak = float(mag.max())
    out = mag / peak * 255.0 if peak > 0 else mag
    return _grey3(np.clip(np.round(out), 0, 255).astype(np.uint8))


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours, class 0 black (the bit-interleaved PASCAL/ADE20K palette)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def segmentation_map(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """A label map (HxW ints, or a boolean mask = classes 0/1) painted with one colour per class."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2:
        raise InputError(f"a segmentation label map must be HxW; got shape {labels.shape}.")
    labels = labels.astype(np.int64)
    if labels.min(initial=0) < 0:
        raise InputError("segmentation labels must be 0 or more.")
    n = max(int(labels.max(initial=0)) + 1, num_classes or 0, 2)
    return palette(n)[labels]


def layout_image(
    boxes: Sequence[Sequence[float]], labels: Sequence[int] | None, size: int | tuple[int, int]
) -> np.ndarray:
    """Boxes ``(x0, y0, x1, y1)`` in pixels (x1/y1 exclusive) as filled class-coloured rectangles, white outlines."""
    import cv2  # lazily: OpenCV costs ~16 MB of resident memory in every process that imports this

    h, w = (size, size) if isinstance(size, int) else size
    labels = list(labels) if labels is not None else [1] * len(boxes)
    if len(labels) != len(boxes):
        raise InputError(f"layout needs one label per box; got {len(boxes)} boxes and {len(labels)} labels.")
    colors = palette(max([int(x) for x in labels] + [1]) + 1)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    # larger boxes first, so small objects stay visible on top of large ones
    order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    for i in order:
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        img[y0:y1, x0:x1] = colors[int(labels[i])]
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    return img


def keypoints_image(points, size: int | tuple[int, int], radius: int | None = None) -> np.ndarray:
    """InstantID's ``draw_kps``: 5 face points ``(x, y)`` as coloured dots with limbs to the nose, on black."""
    import cv2  # lazily: OpenCV costs ~16 MB of resident memory in every process that imports this

    h, w = (size, size) if isinstance(size, int) else size
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) != 5:
        raise InputError(f"keypoints_image needs 5 face points (eyes, nose, mouth corners); got {len(pts)}.")
    stick = max(1, round(min(h, w) / 64 * 4)) if radius is None else radius  # InstantID: width 4 at 512-ish
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for a, b in KEYPOINT_LIMBS:
        (xa, ya), (xb, yb) = pts[a], pts[b]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly(
            (int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(img, poly, KEYPOINT_COLORS[a])
    img = (img * 0.6).astype(np.uint8)
    for (x, y), color in zip(pts, KEYPOINT_COLORS):
        cv2.circle(img, (int(x), int(y)), stick + 1, color, -1)
    return img


def soft_edges(images: torch.Tensor) -> torch.Tensor:
    """Differentiable edge map: Sobel gradient magnitude of the grey image (Bx3xHxW in [0, 1] -> Bx1xHxW in [0, 1]).

    ControlNet++ compares the edges of the model's one-step ``x0`` prediction with the input condition; a hard
    Canny has no gradient, this soft version does.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"soft_edges expects Bx3xHxW or Bx1xHxW, got {tuple(images.shape)}")
    grey = images.mean(dim=1, keepdim=True) if images.shape[1] == 3 else images
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=grey.dtype, device=grey.device)
    kernel = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernel)
    # |g| <= 4 * sqrt(2) for inputs in [0, 1]; scale so a full step edge reads about 1
    return (g.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt().div(4.0).clamp(max=1.0)


def soft_hf(images: torch.Tensor) -> torch.Tensor:
    """Differentiable :func:`sobel_hf`: ``|Sobel_x| + |Sobel_y|`` of the grey image over its per-image maximum.

    Bx3xHxW in [0, 1] -> Bx1xHxW in [0, 1]; equals ``sobel_hf(image) / 255`` up to uint8 rounding.
    """
    grey = 0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]  # OpenCV's RGB2GRAY weights
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=grey.dtype, device=grey.device)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), torch.stack([kx, kx.t()])[:, None])
    mag = g.abs().sum(dim=1, keepdim=True)
    return mag / mag.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
