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
__all__ = [
    "ALL_KINDS", "MIX", "VAE_MIX", "all_renderers", "available_kinds", "mixed_samples", "render", "renderers",
    "to_batch",
]  # fmt: skip
# the VAE and the world CLIP see the whole world; objects dominate because most prompts are about objects
MIX = {"objects": 0.55, "faces": 0.2, "scenes": 0.15, "subjects": 0.1}
# world v2's VAE (zoo.vae_wide) sees every render kind, glyphs (the hardest: thin strokes) more often
VAE_MIX = {
    "objects": 0.22, "faces": 0.12, "scenes": 0.1, "subjects": 0.06, "glyph": 0.2, "light": 0.1, "pair": 0.06,
    "relation": 0.08, "story": 0.06,
}  # fmt: skip


def all_renderers() -> dict:
    """kind -> ``fn(seed, style, size) -> Sample``: the four v1 kinds plus every render kind of
    :mod:`tailor.world.kinds` with a training image (``dataset``: glyph, light, pair, relation, story)."""
    from tailor.world.kinds import kinds

    out = dict(renderers())
    for name, kind in kinds().items():
        if kind.dataset is not None and name not in out:
            out[name] = kind.dataset
    return out


def mixed_samples(
    n: int,
    seed: int,
    step: int,
    size: int = 64,
    kinds: dict[str, float] | None = None,
    styles: tuple[str, ...] = tuple(STYLES),
    indices: list[int] | None = None,
) -> list:
    """``n`` samples of random kinds (weighted by ``kinds``, any of :func:`all_renderers`) and styles for ``step``
    of a recipe (only those of ``indices`` when given: the same images, so a batch can be rendered in parts)."""
    fns = all_renderers() if set(kinds or MIX) - set(ALL_KINDS) else renderers()
    weights = {k: w for k, w in (kinds or MIX).items() if k in fns}
    names, p = list(weights), np.array(list(weights.values()), float)
    rng = make_rng(seed, step)
    picks = rng.choice(len(names), size=n, p=p / p.sum())
    style_ids = rng.integers(len(styles), size=n)
    out = []
    for i in range(n) if indices is None else indices:
        s = derive_seed(seed, step, i)
        try:
            out.append(fns[names[picks[i]]](s, styles[style_ids[i]], size))
        except TypeError:  # a renderer without a style argument
            out.append(fns[names[picks[i]]](s, "photo", size))
    return out


def _render_part(args) -> np.ndarray:
    n, seed, step, size, kinds, indices = args
    return np.stack([s.image for s in mixed_samples(n, seed, step, size, kinds, indices=indices)])


class BatchRenderer:
    """``renderer(step)`` = ``to_batch(mixed_samples(n, seed, step, size, kinds))``, rendered by ``workers``
    processes in parts while the caller trains on the previous step (the next step is always under way). With
    ``workers=0`` it renders in this process. On a GPU one process cannot render as fast as the model trains."""

    def __init__(self, n: int, seed: int, size: int = 64, kinds: dict[str, float] | None = None, workers: int = 0):
        self.args, self.workers, self.pending = (n, seed, size, kinds), workers, {}
        self.pool = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))

    def _submit(self, step: int) -> list:
        n, seed, size, kinds = self.args
        parts = np.array_split(np.arange(n), min(n, self.workers * 2))
        return [self.pool.submit(_render_part, (n, seed, step, size, kinds, [int(i) for i in p])) for p in parts]

    def __call__(self, step: int) -> torch.Tensor:
        n, seed, size, kinds = self.args
        if self.pool is None:
            return to_batch(mixed_samples(n, seed, step, size, kinds))
        futures = self.pending.pop(step, None) or self._submit(step)
        for ahead in (step + 1,):
            if ahead not in self.pending:
                self.pending[ahead] = self._submit(ahead)
        arr = np.concatenate([f.result() for f in futures]).astype(np.float32) / 127.5 - 1.0
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def to_batch(samples: list) -> torch.Tensor:
    """Images as a float tensor in [-1, 1], shape (N, 3, H, W)."""
    arr = np.stack([s.image for s in samples]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
