"""Training items for StoryGen: a frame of a world story with up to ``max_frames`` frames before it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.core.images import to_tensor
from tailor.world.vocab import derive_seed


class StoryFrames(Dataset):
    """Item ``i``: world story ``derive_seed(seed, i)`` of ``frames`` frames (objects and faces alternate); its
    target frame ``k`` (1..frames-1, drawn from the story's seed) and the ``min(k, max_frames)`` frames before it in
    the last slots of ``ref_pixel_values`` (M x 3 x H x W, oldest first; unused slots are zeros), their prompts in
    ``ref_captions`` and their count in ``ref_count``."""

    def __init__(self, length: int, size: int, seed: int, frames: int = 4, max_frames: int = 3):
        self.length, self.size, self.seed, self.frames, self.max_frames = length, size, seed, frames, max_frames

    def __len__(self) -> int:
        return self.length

    def story(self, i: int):
        from tailor.world.stories import render_story

        s = derive_seed(self.seed, i)
        return render_story(s, frames=self.frames, subject=("object", "face")[i % 2], size=self.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        frames = self.story(i)
        k = 1 + int(np.random.default_rng(derive_seed(self.seed, i)).integers(self.frames - 1))
        refs = frames[max(0, k - self.max_frames) : k]
        m = self.max_frames
        px = torch.zeros(m, 3, self.size, self.size)
        caps = [""] * m
        for j, s in enumerate(refs):
            px[m - len(refs) + j] = to_tensor(s.image)
            caps[m - len(refs) + j] = s.caption
        target = frames[k]
        return {
            "pixel_values": to_tensor(target.image),
            "caption": target.caption,
            "ref_pixel_values": px,
            "ref_captions": caps,
            "ref_count": torch.tensor(len(refs)),
        }
