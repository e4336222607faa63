"""World renders for the zoo's recipes: seeded batches of objects (every style), faces, scenes and subjects.

Every image is a deterministic function of ``(seed, step, index)``, so a resumed recipe sees the same batches.
Kinds the world package does not (yet) provide are skipped, so the recipes run on whatever the world renders.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tailor.world.vocab import STYLES, derive_seed, make_rng

ALL_KINDS = ("objects", "faces", "scenes", "subjects")
# the VAE and the world CLIP see the whole world; objects dominate because most prompts are about objects
MIX = {"objects": 0.55, "faces": 0.2, "scenes": 0.15, "subjects": 0.1}


def _renderers() -> dict[str, Callable]:
    """kind -> ``fn(seed, style, size) -> Sample`` for each kind the world package provides."""
    import tailor.world as world
    from tailor.world.objects import render_object

    out: dict[str, Callable] = {"objects": lambda s, st, size: render_object(s, style=st, size=size)}
    if hasattr(world, "render_face"):
        out["faces"] = lambda s, st, size: world.render_face(s, style=st, size=size)
    if hasattr(world, "render_scene"):
        out["scenes"] = lambda s, st, size: world.render_scene(s, style=st, size=size)
    if hasattr(world, "render_subject") and hasattr(world, "subjects"):
        subs = world.subjects()
        names = list(subs) if isinstance(subs, dict) else list(range(len(subs)))
        if names:

            def subject(s, st, size):
                spec = subs[names[s % len(names)]]
                return world.render_subject(spec, s, style=st, size=size)

            out["subjects"] = subject
    return out


def available_kinds() -> list[str]:
    return list(_renderers())


def render(kind: str, seed: int, style: str = "photo", size: int = 64):
    """One world sample of ``kind`` (``objects``/``faces``/``scenes``/``subjects``)."""
    return _renderers()[kind](seed, style, size)


def mixed_samples(
    n: int,
    seed: int,
    step: int,
    size: int = 64,
    kinds: dict[str, float] | None = None,
    styles: tuple[str, ...] = tuple(STYLES),
) -> list:
    """``n`` samples of random kinds (weighted by ``kinds``) and styles for ``step`` of a recipe."""
    fns = _renderers()
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
