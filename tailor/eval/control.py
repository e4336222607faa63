"""Controllability of generated images against their condition maps (ControlNet++'s evaluation), per image pair.

- ``canny``: F1 (1-pixel tolerance) between the Canny edges of the generated image (the same extractor the
  condition maps are made with) and the condition's edges;
- ``seg``: mIoU (classes present in truth or prediction) between the world segmenter oracle's label map of the
  generated image and the condition's label map (its palette colours read back as class ids).

``tailor bench control`` scores its held-out world renders with the same functions; ``tailor eval control`` scores
folders of images and condition maps paired by file name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tailor.errors import InputError

KINDS = ("canny", "seg")


def edge_f1_to_map(image, edges: np.ndarray) -> float:
    """Edge F1 of ``image`` (PIL) against a boolean HxW edge map (``image`` resized to the map's size)."""
    from tailor.eval.image_metrics import canny, edge_f1

    edges = np.asarray(edges) > 0
    return edge_f1(canny(np.asarray(image.convert("RGB").resize(edges.shape[::-1]))), edges)


def label_miou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean IoU over the classes present in ``truth`` or ``pred`` (two HxW integer label maps)."""
    classes = np.union1d(np.unique(pred), np.unique(truth))
    return float(np.mean([((pred == c) & (truth == c)).sum() / ((pred == c) | (truth == c)).sum() for c in classes]))


#: the world segmenter every seg score reads with unless told otherwise: the first one (one-object renders), so that
#: the numbers measured with it stay comparable; ``segmenter_scenes`` is the one trained on multi-object scenes too
SEGMENTER = "segmenter"


def segment(images, size: tuple[int, int], segmenter: str = SEGMENTER) -> np.ndarray:
    """A world segmenter oracle's (name or file) label maps (N x H x W) of PIL ``images`` resized to ``size``."""
    import torch

    from tailor.world.zoo.oracles import load_oracle, to_unit

    model = load_oracle(segmenter)
    with torch.no_grad():
        return model(to_unit([im.convert("RGB").resize(size[::-1]) for im in images])).argmax(1).numpy()


def seg_mious(images, label_maps: list[np.ndarray], segmenter: str = SEGMENTER) -> list[float]:
    """Per image: mIoU of the segmenter oracle's prediction on ``images[i]`` against ``label_maps[i]``."""
    out = []
    for im, truth in zip(images, label_maps):
        out.append(label_miou(segment([im], truth.shape, segmenter)[0], truth))
    return out


def labels_from_seg_map(seg_map: np.ndarray, num_classes: int = 256) -> np.ndarray:
    """Class ids of a segmentation map painted with :func:`tailor.conditions.extract.palette` (nearest colour, so a
    resized or re-encoded map still reads back)."""
    from tailor.conditions.extract import palette

    rgb = np.asarray(seg_map)[..., :3].astype(np.int32)
    colors = palette(num_classes).astype(np.int32)
    flat = rgb.reshape(-1, 3)
    exact = {tuple(c): i for i, c in reversed(list(enumerate(colors)))}
    out = np.empty(len(flat), dtype=np.int64)
    for color in np.unique(flat, axis=0):
        i = exact.get(tuple(color))
        if i is None:
            i = int(np.argmin(((colors - color) ** 2).sum(1)))
        out[(flat == color).all(1)] = i
    return out.reshape(rgb.shape[:2])


def pair_files(images: Path, conditions: Path) -> list[tuple[Path, Path]]:
    """(image, condition) pairs of the same file stem; an InputError when none pair."""
    from tailor.core.images import list_images

    conds = {p.stem: p for p in list_images(conditions)}
    pairs = [(p, conds[p.stem]) for p in list_images(images) if p.stem in conds and p.stem != "grid"]
    if not pairs:
        raise InputError(
            f"no image in {images} has a condition map of the same file name (stem) in {conditions}; name each "
            f"condition like its image (e.g. 000.png and 000.png)."
        )
    return pairs


def control_scores(kind: str, images: Path, conditions: Path, segmenter: str = SEGMENTER) -> dict:
    """Mean controllability of the images in ``images`` against their same-stem maps in ``conditions`` (``seg``:
    read by the world segmenter ``segmenter``): ``{"kind", "metric", "score", "pairs", "per_image": {stem: ...}}``."""
    from tailor.core.images import load_image

    if kind not in KINDS:
        raise InputError(f"--kind {kind!r} is not scored; use {' or '.join(KINDS)}.")
    pairs = pair_files(Path(images), Path(conditions))
    imgs = [load_image(a) for a, _ in pairs]
    maps = [np.asarray(load_image(b)) for _, b in pairs]
    if kind == "canny":
        metric, scores = "edge_f1", [edge_f1_to_map(im, m[..., 0] > 127) for im, m in zip(imgs, maps)]
    else:
        metric, scores = "miou", seg_mious(imgs, [labels_from_seg_map(m) for m in maps], segmenter)
    per_image = {a.stem: round(float(s), 4) for (a, _), s in zip(pairs, scores)}
    return {
        "kind": kind,
        "metric": metric,
        "score": float(np.mean(scores)),
        "pairs": len(pairs),
        "per_image": per_image,
    }
