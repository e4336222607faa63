"""AnyDoor's inputs as images (Chen et al., CVPR 2024): the object without background, its high-frequency map and
the collage the detail branch reads. Pure numpy / OpenCV, no torch.

- :func:`hf_map` is the official ``datasets/data_utils.py::sobel``: at 256x256, per RGB channel Sobel x and y
  (3x3, |.| saturated to uint8), ``0.5|x| + 0.5|y|`` (rounded to uint8), the maximum over channels, times the mask
  eroded by a 5x5 kernel twice, values < 50 set to 0, then ``map / 255 * image`` (uint8) and resized back.
  (Not :func:`tailor.conditions` ``hf``/``sobel_hf``: that map is a different filter.)
- :func:`object_square`: background to white, the crop of the mask's box grown by ``expand`` (white), padded to a
  white square, as the official ``process_pairs`` prepares the reference before the encoder and the HF map.
- :func:`collage`: the target scene with the box replaced by the object's HF map resized into it, plus the box as a
  mask channel: the 4-channel hint in [-1, 1] (colour) and {0, 1} (mask), HxWx4 float32.
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIZE = 256  # the official computes the map at 256x256
ERODE_KERNEL, ERODE_ITERATIONS = 5, 2
THRESHOLD = 50


def hf_map(image: np.ndarray, mask: np.ndarray, threshold: int = THRESHOLD, work: int = WORK_SIZE) -> np.ndarray:
    """The high-frequency map (uint8 HxWx3) of ``image`` (uint8 HxWx3) inside ``mask`` (HxW, >0.5 = object)."""
    h, w = image.shape[:2]
    img = cv2.resize(np.ascontiguousarray(image, np.uint8), (work, work))
    m = (cv2.resize(mask.astype(np.float32), (work, work)) > 0.5).astype(np.uint8)
    m = cv2.erode(m, np.ones((ERODE_KERNEL, ERODE_KERNEL), np.uint8), iterations=ERODE_ITERATIONS)
    gx = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3))
    edge = cv2.addWeighted(gx, 0.5, gy, 0.5, 0).max(axis=-1) * m
    edge[edge < threshold] = 0
    out = (edge[..., None].astype(np.float32) / 255 * img.astype(np.float32)).astype(np.uint8)
    return cv2.resize(out, (w, h))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the nonzero pixels of ``mask``."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def grow_box(box, ratio: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` scaled by ``ratio`` about its centre, clipped to the image."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ratio / 2, (y1 - y0) * ratio / 2
    nx0, ny0 = max(0, int(round(cx - hw))), max(0, int(round(cy - hh)))
    nx1, ny1 = min(width, int(round(cx + hw))), min(height, int(round(cy + hh)))
    return nx0, ny0, max(nx1, nx0 + 1), max(ny1, ny0 + 1)


def pad_square(image: np.ndarray, value: int) -> np.ndarray:
    """Pad to a square, centred (the official ``pad_to_square`` with ``random=False``)."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, constant_values=value)


def object_square(image: np.ndarray, mask: np.ndarray, expand: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """``(object on white, mask)`` cropped to the mask's box grown by ``expand``, padded to a square (white / 0)."""
    m = (mask > 0.5).astype(np.uint8)
    white = np.where(m[..., None] > 0, image, 255).astype(np.uint8)
    x0, y0, x1, y1 = mask_box(m)
    w, h = x1 - x0, y1 - y0
    side_w, side_h = int(round(w * expand)), int(round(h * expand))
    px, py = (side_w - w) // 2, (side_h - h) // 2
    crop = np.pad(white[y0:y1, x0:x1], [(py, side_h - h - py), (px, side_w - w - px), (0, 0)], constant_values=255)
    cm = np.pad(m[y0:y1, x0:x1], [(py, side_h - h - py), (px, side_w - w - px)], constant_values=0)
    return pad_square(crop, 255), pad_square(cm, 0)


def collage(scene: np.ndarray, box, detail: np.ndarray | None) -> np.ndarray:
    """The hint: ``scene`` (uint8 HxWx3) with ``box`` holding ``detail`` (the HF map, resized into the box; None:
    the box cleared to black, the ablation without the detail map) -> HxWx4 float32 (colour in [-1, 1], box mask)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    out = scene.astype(np.uint8).copy()
    out[y0:y1, x0:x1] = 0 if detail is None else cv2.resize(detail, (x1 - x0, y1 - y0))
    m = np.zeros(scene.shape[:2] + (1,), np.float32)
    m[y0:y1, x0:x1] = 1.0
    return np.concatenate([out.astype(np.float32) / 127.5 - 1.0, m], axis=-1)
