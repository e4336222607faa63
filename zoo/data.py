"""World renders for the zoo's recipes: seeded batches of objects (every style), faces, scenes and subjects.

Every image is a deterministic function of ``(seed, step, index)``, so a resumed recipe sees the same batches.
Kinds the world package does not (yet) provide are skipped, so the recipes run on whatever the world renders
(:func:`tailor.world.zoo.vocabulary.renderers`).
"""

from __future__ import annotations

import numpy as np
import torch

from tailor.world.vocab import STYLES, derive_seed, make_rng
from tailor.world.zoo.vocabulary import available_kinds, render, renderers

ALL_KINDS = ("objects", "faces", "scenes", "subjects")
__all__ = ["ALL_KINDS", "MIX", "available_kinds", "mixed_samples", "render", "renderers", "to_batch"]
# the VAE and the world CLIP see the whole world; objects dominate because most prompts are about objects
MIX = {"objects": 0.55, "faces": 0.2, "scenes": 0.15, "subjects": 0.1}


def mixed_samples(
    n: int,
    seed: int,
    step: int,
    size: int = 64,
    kinds: dict[str, float] | None = None,
    styles: tuple[str, ...] = tuple(STYLES),
) -> list:
    """``n`` samples of random kinds (weighted by ``kinds``) and styles for ``step`` of a recipe."""
    fns = renderers()
    weights = {k: w for k, w in (kinds or MIX).items() if k in fns}
    names, p = list(weights), np.array(list(weights.values()), float)
    rng = make_rng(seed, step)
    picks = rng.choice(len(names), size=n, p=p / p.sum())
    style_ids = rng.integers(len(styles), size=n)
    out = []
    for i in range(n):
        s = derive_seed(seed, step, i)
        try:
            out.append(fns[names[picks[i]]](s, styles[style_ids[i]], size))
        except TypeError:  # a renderer without a style argument
            out.append(fns[names[picks[i]]](s, "photo", size))
    return out


def to_batch(samples: list) -> torch.Tensor:
    """Images as a float tensor in [-1, 1], shape (N, 3, H, W)."""
    arr = np.stack([s.image for s in samples]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
