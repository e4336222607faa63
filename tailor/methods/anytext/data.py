"""AnyText's training items (Tuo et al. 2023; official ``t3_dataset.py``): every item of the data gets its text lines'
glyph image, position mask, masked image, line renders and frames.

Lines come from a world glyph render's ``attrs.lines`` (text + polygon); items without lines get empty ones (no
glyphs, no positions, no embedding). The masked image is, with probability ``masked_image_prob``, the picture with
every line's frame blanked (0 in [-1, 1]: grey), else blank altogether (the paper's 0.5; text generation samples
with a blank one). Each draw is seeded by ``(seed, item index)``, so a resumed run sees the same items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.core.training.noise import generator
from tailor.methods.anytext.glyphs import LINE_H, LINE_W, glyph_image, line_image, lines_of_attrs, position_mask

STREAM_MASKED = 23  # random stream of the masked-image draws (see core.training.noise)
KEYS = ("anytext_glyphs", "anytext_positions", "anytext_masked", "anytext_lines", "anytext_polygons", "anytext_n")


def line_tensors(texts: list[str], max_lines: int) -> torch.Tensor:
    """(max_lines, 3, LINE_H, LINE_W): each line's own render (white on black), zero rows after the last."""
    out = torch.zeros(max_lines, 3, LINE_H, LINE_W)
    for i, t in enumerate(texts[:max_lines]):
        out[i] = torch.from_numpy(line_image(t))[None]
    return out


class AnyTextDataset(Dataset):
    """``dataset`` with the ``anytext_*`` inputs added to every item (see the module docstring)."""

    def __init__(self, dataset: Dataset, seed: int, glyph_scale: int, max_lines: int, masked_image_prob: float):
        self.dataset, self.seed = dataset, int(seed)
        self.glyph_scale, self.max_lines, self.p = int(glyph_scale), int(max_lines), float(masked_image_prob)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        px = item["pixel_values"]
        h, w = px.shape[-2:]
        lines = lines_of_attrs(item.get("attrs"))[: self.max_lines]
        pos = torch.from_numpy(position_mask(lines, h, w))[None]
        item["anytext_glyphs"] = torch.from_numpy(glyph_image(lines, h, w, self.glyph_scale))[None]
        item["anytext_positions"] = pos
        keep = bool(torch.rand((), generator=generator(self.seed, STREAM_MASKED, int(i))) < self.p)
        item["anytext_masked"] = px * (1 - pos) if keep and lines else torch.zeros_like(px)
        item["anytext_lines"] = line_tensors([ln.text for ln in lines], self.max_lines)
        polys = np.zeros((self.max_lines, 4, 2), np.float32)
        for k, ln in enumerate(lines):
            polys[k] = ln.polygon
        item["anytext_polygons"] = torch.from_numpy(polys)
        item["anytext_n"] = torch.tensor(len(lines))
        item["anytext_texts"] = "\n".join(ln.text for ln in lines)
        return item
