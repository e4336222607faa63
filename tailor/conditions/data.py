"""Training data for spatial control (ControlNet, Zhang et al. 2023; T2I-Adapter, Mou et al. 2023).

:class:`ConditionDataset` wraps any training dataset and adds ``item["condition"]``: float 3xHxW in [0, 1]
(diffusers' convention for control images). World data gives the exact ground truth (outlines, masks, boxes,
keypoints); other data gets the condition extracted from the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from tailor.conditions import extract, from_truth, get_kind, truth_of_sample
from tailor.core.control import to_uint8_image


def _sample_fn(dataset) -> Callable[[int], Any] | None:
    """i -> world Sample for a WorldDataset, possibly inside Subset / caption-override wrappers; else None."""
    fn = getattr(dataset, "sample", None)
    if callable(fn):
        return fn
    if isinstance(dataset, Subset):
        inner = _sample_fn(dataset.dataset)
        return None if inner is None else (lambda i: inner(dataset.indices[i]))
    inner_ds = getattr(dataset, "dataset", None)
    if inner_ds is not None and len(inner_ds) == len(dataset):
        return _sample_fn(inner_ds)
    return None


def to_condition_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float 3xHxW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)


def batch_conditions(batch: dict[str, Any], kind: str) -> torch.Tensor:
    """``condition`` for a collated batch that lacks it (e.g. a validation set): Bx3xHxW in [0, 1]."""
    out = []
    pixels = batch["pixel_values"]
    for i in range(pixels.shape[0]):
        image = to_uint8_image(pixels[i])
        truth = {k: batch[k][i] for k in ("edges", "mask", "keypoints") if k in batch}
        out.append(to_condition_tensor(from_truth(kind, {**truth, "image": image}) if truth else extract(kind, image)))
    return torch.stack(out).to(pixels.device)


class ConditionDataset(Dataset):
    """``dataset`` with ``item["condition"]`` of kind ``kind`` (ground truth when the data carries it).

    Training items are deterministic (no random augmentation: :class:`tailor.core.training.data.FolderDataset`, the
    world datasets are seeded per index), so each condition map is made once and kept (uint8, up to ``cache_bytes``,
    default :data:`~tailor.core.training.data.DECODED_CACHE_BYTES`; 0 = make it on every access), as the latents
    and text embeddings are with ``--cache-latents`` / ``--cache-text``: extraction (Canny, depth, ...) is not
    repeated every epoch."""

    def __init__(self, dataset: Dataset, kind: str, cache_bytes: int | None = None):
        from tailor.core.training.data import DECODED_CACHE_BYTES, KeptItems

        get_kind(kind)  # fail early on an unknown kind
        self.dataset, self.kind = dataset, kind
        self._sample = _sample_fn(dataset)
        self._maps = KeptItems(DECODED_CACHE_BYTES if cache_bytes is None else cache_bytes)

    def __len__(self) -> int:
        return len(self.dataset)

    def condition(self, i: int, item: dict[str, Any]) -> np.ndarray:
        if self._sample is not None:
            return from_truth(self.kind, self._sample(i))
        image = to_uint8_image(item["pixel_values"])
        if any(k in item for k in ("edges", "mask", "keypoints", "boxes")):
            truth = {k: item[k] for k in ("edges", "mask", "keypoints", "boxes") if k in item}
            return from_truth(self.kind, {**truth, "image": image})
        return extract(self.kind, image)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        if "condition" not in item:
            cond = self._maps.get(i, lambda: self.condition(i, item), lambda c: c.nbytes)
            item["condition"] = to_condition_tensor(cond)
        return item


__all__ = ["ConditionDataset", "batch_conditions", "to_condition_tensor", "truth_of_sample"]
