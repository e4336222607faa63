"""Condition images for spatial control (ControlNet, Zhang et al. 2023; T2I-Adapter, Mou et al. 2023).

A condition *kind* (``canny``, ``hf``, ``seg``, ``layout``, ``keypoints``) knows how to make its condition image
from an RGB image (``from_image``; ``None`` where that needs a model tailor does not ship yet) and from exact
ground truth (``from_truth``: a world :class:`~tailor.world.Sample` or a training item with ``edges`` / ``mask`` /
``boxes`` / ``keypoints``). Training data gets the ground-truth version whenever the data carries it.

>>> from tailor.conditions import extract
>>> cond = extract("canny", image)  # doctest: +SKIP  (uint8 HxWx3, white edges on black)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tailor.conditions.extract import (
    KEYPOINT_COLORS,
    as_rgb,
    canny,
    keypoints_image,
    layout_image,
    palette,
    segmentation_map,
    sobel_hf,
    soft_edges,
    soft_hf,
)
from tailor.errors import ConfigError, InputError


@dataclass(frozen=True)
class ConditionKind:
    """One kind of condition image: how to make it from an image and from ground truth."""

    name: str
    summary: str
    from_image: Callable[[np.ndarray], np.ndarray] | None
    from_truth: Callable[[dict[str, Any]], np.ndarray | None]


def _hw(truth: dict[str, Any]) -> tuple[int, int]:
    for key in ("image", "mask", "edges"):
        if truth.get(key) is not None:
            return tuple(np.asarray(truth[key]).shape[-2:]) if key != "image" else np.asarray(truth[key]).shape[:2]
    raise InputError("ground truth has no image, mask or edges to take the size from.")


def _plane(x) -> np.ndarray:
    """An HxW array from HxW or 1xHxW (numpy or torch)."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return a[0] if a.ndim == 3 else a


def _edges_truth(t: dict[str, Any]) -> np.ndarray | None:
    if t.get("edges") is None:
        return None if t.get("image") is None else canny(t["image"])
    e = (_plane(t["edges"]) > 0).astype(np.uint8) * 255
    return np.repeat(e[..., None], 3, axis=2)


def _hf_truth(t: dict[str, Any]) -> np.ndarray | None:
    return None if t.get("image") is None else sobel_hf(t["image"])


def _seg_truth(t: dict[str, Any]) -> np.ndarray | None:
    if t.get("labels_map") is not None:
        return segmentation_map(_plane(t["labels_map"]))
    if t.get("mask") is None:
        return None
    return segmentation_map((_plane(t["mask"]) > 0.5).astype(np.int64))


def _layout_truth(t: dict[str, Any]) -> np.ndarray | None:
    boxes = t.get("boxes")
    if boxes is None and t.get("mask") is not None:  # one object: its tight box
        m = _plane(t["mask"]) > 0.5
        if not m.any():
            return np.zeros((*m.shape, 3), dtype=np.uint8)
        ys, xs = np.nonzero(m)
        boxes = [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]
    if boxes is None:
        return None
    return layout_image(boxes, t.get("box_labels"), _hw(t))


def _keypoints_truth(t: dict[str, Any]) -> np.ndarray | None:
    kps = t.get("keypoints")
    if kps is None:
        return None
    kps = np.asarray(kps.detach().cpu() if hasattr(kps, "detach") else kps)
    return keypoints_image(kps, _hw(t))


KINDS: dict[str, ConditionKind] = {
    "canny": ConditionKind("canny", "Canny edges (OpenCV, thresholds 100/200)", canny, _edges_truth),
    "hf": ConditionKind("hf", "high-frequency map |Sobel x| + |Sobel y| (AnyDoor)", sobel_hf, _hf_truth),
    "seg": ConditionKind("seg", "segmentation map, one palette colour per class", None, _seg_truth),
    "layout": ConditionKind("layout", "boxes drawn as class-coloured rectangles", None, _layout_truth),
    "keypoints": ConditionKind("keypoints", "5 face keypoints drawn InstantID-style", None, _keypoints_truth),
}


def get_kind(name: str) -> ConditionKind:
    if name not in KINDS:
        raise ConfigError(f"unknown condition {name!r}; available: {', '.join(KINDS)}.")
    return KINDS[name]


def extract(name: str, image) -> np.ndarray:
    """The condition image of kind ``name`` computed from an RGB image (uint8 HxWx3 out)."""
    kind = get_kind(name)
    if kind.from_image is None:
        raise InputError(
            f"a {name!r} condition cannot be computed from a plain image yet; pass a ready condition map "
            f"(--control-map) or data with ground truth."
        )
    return kind.from_image(as_rgb(image))


def soft_extractor(name: str):
    """A differentiable extractor (Bx3xHxW in [0, 1] -> Bx1xHxW in [0, 1]) for reward losses, or None.

    ``hf`` is exact (:func:`soft_hf` = ``sobel_hf`` / 255); ``canny`` uses the Sobel-magnitude soft edges as a
    differentiable stand-in for Canny; ``seg`` / ``layout`` / ``keypoints`` need a learned model (None for now).
    """
    return {"canny": soft_edges, "hf": soft_hf}.get(get_kind(name).name)


def truth_of_sample(sample) -> dict[str, Any]:
    """The ground truth of a world :class:`~tailor.world.Sample` as a ``from_truth`` dict (class ids: shapes)."""
    from tailor.world.vocab import SHAPES

    def class_id(attrs: dict[str, Any]) -> int:
        shape = attrs.get("shape")
        return SHAPES.index(shape) + 1 if shape in SHAPES else 1

    objects = list(sample.objects or [])
    truth: dict[str, Any] = {
        "image": sample.image,
        "mask": sample.mask,
        "edges": sample.edges,
        "keypoints": sample.keypoints,
    }
    if objects:
        truth["boxes"] = [o["box"] for o in objects]
        truth["box_labels"] = [class_id(o) for o in objects]
        labels = np.zeros(sample.mask.shape, dtype=np.int64)
        for o, c in zip(objects, truth["box_labels"]):
            if o.get("mask") is not None:
                labels[np.asarray(o["mask"]) > 0] = c
        truth["labels_map"] = labels
    else:
        truth["boxes"] = [sample.box]
        truth["box_labels"] = [class_id(sample.attrs)]
        truth["labels_map"] = np.asarray(sample.mask > 0, dtype=np.int64) * truth["box_labels"][0]
    return truth


def from_truth(name: str, truth) -> np.ndarray:
    """The condition of kind ``name`` from ground truth (a world Sample or a dict); falls back to the image."""
    if hasattr(truth, "edges") and hasattr(truth, "image"):
        truth = truth_of_sample(truth)
    out = get_kind(name).from_truth(truth)
    if out is None:
        raise InputError(
            f"the data carries no ground truth for a {name!r} condition and it cannot be computed "
            f"from the image; use data with that ground truth or another condition."
        )
    return out


KEYPOINT_COLORS_RGB = KEYPOINT_COLORS

__all__ = [
    "KEYPOINT_COLORS",
    "KEYPOINT_COLORS_RGB",
    "KINDS",
    "ConditionKind",
    "as_rgb",
    "canny",
    "extract",
    "from_truth",
    "get_kind",
    "keypoints_image",
    "layout_image",
    "palette",
    "segmentation_map",
    "sobel_hf",
    "soft_edges",
    "soft_extractor",
    "soft_hf",
    "truth_of_sample",
]
