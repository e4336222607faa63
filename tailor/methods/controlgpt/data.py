"""Control-GPT's training items (Zhang et al. 2023): image + caption + sketch + grounding.

The paper makes sketches from instance masks (LVIS polygons) because no data pairs images with sketches; the world
knows every object's exact outline, so each item gets the true outline of each object (its shape's polygon at its
pose) drawn white on black (:func:`tailor.synth.plan.sketch_image`), its tight box and its grounding name
(``red striped star``; the pattern word is left out with probability ``pattern_dropout``, seeded by the item index,
because prompts often omit it). Items whose ``attrs`` carry no objects (plain single-object renders) use the object
itself (``attrs`` with a shape and a pose).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.core.training.noise import generator

STREAM_PATTERN = 29  # random stream of the pattern-word draws (see core.training.noise)
STREAM_PLAIN = 41  # random stream of the class-only caption draws (see core.training.noise)


def objects_of(attrs: dict[str, Any] | None, size: int) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """The objects of a world item (name, colour, pattern, tight box of the true outline) and their pixel outlines."""
    from tailor.world.draw import object_outlines

    found = object_outlines(attrs, size)
    out = [
        {"name": o["shape"], "color": o.get("color"), "pattern": o.get("pattern"), "box": box} for o, _, box in found
    ]
    return out, [pts for _, pts, _ in found]


class ControlGPTDataset(Dataset):
    """``dataset`` with ``controlgpt_sketch`` (3xHxW in [0, 1]), ``controlgpt_boxes`` (max_objects x 4 in [0, 1]),
    ``controlgpt_mask`` (max_objects), ``controlgpt_names`` (the names joined by newlines) and
    ``controlgpt_plain_caption`` (the caption without colour and pattern words) on every item."""

    def __init__(self, dataset: Dataset, seed: int, max_objects: int, pattern_dropout: float):
        self.dataset, self.seed = dataset, int(seed)
        self.max_objects, self.p = int(max_objects), float(pattern_dropout)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from tailor.synth.plan import phrase, sketch_image
        from tailor.world.relation_text import class_only_caption

        item = dict(self.dataset[i])
        size = int(item["pixel_values"].shape[-1])
        objs, outlines = objects_of(item.get("attrs"), size)
        objs, outlines = objs[: self.max_objects], outlines[: self.max_objects]
        g = generator(self.seed, STREAM_PATTERN, int(i))
        drop = torch.rand(max(1, len(objs)), generator=g) < self.p
        names = [phrase({**o, "pattern": None if drop[k] else o["pattern"]}) for k, o in enumerate(objs)]
        item["controlgpt_sketch"] = torch.from_numpy(sketch_image(objs, size, outlines)).permute(2, 0, 1).float() / 255
        boxes = torch.zeros(self.max_objects, 4)
        mask = torch.zeros(self.max_objects)
        for k, o in enumerate(objs):
            boxes[k] = torch.tensor(o["box"]) / size
            mask[k] = 1
        item["controlgpt_boxes"], item["controlgpt_mask"] = boxes, mask
        item["controlgpt_names"] = "\n".join(names)
        item["controlgpt_plain_caption"] = class_only_caption(item.get("attrs"), item.get("caption", ""))
        return item
