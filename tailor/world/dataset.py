"""``WorldDataset``: a map-style torch dataset of world renders; item ``i`` is a pure function of ``(seed, i)``.

Items are rendered on the fly (about a millisecond each at 64 px), so nothing is stored and any length
is free. ``holdout`` removes (shape, colour) combinations from sampling so compositional generalisation
can be measured on them later (``HOLDOUT_COMBOS`` is the default set the world bench uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.errors import ConfigError
from tailor.world.faces import render_face
from tailor.world.objects import render_object
from tailor.world.sample import Sample
from tailor.world.scenes import render_scene
from tailor.world.subjects import SubjectSpec, render_subject
from tailor.world.vocab import STYLES, canonical, check_seed, check_size, derive_seed, make_rng

KINDS = ("objects", "faces", "scenes", "subject", "mixed")
MIXED_WEIGHTS = {"objects": 0.6, "faces": 0.2, "scenes": 0.2}
# (shape, colour) pairs never drawn when holdout=HOLDOUT_COMBOS, for compositional evaluation.
HOLDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("star", "blue"), ("heart", "green"), ("triangle", "pink"), ("hexagon", "red"), ("cross", "yellow")}
)
_MAX_TRIES = 1000


def render_kinds() -> dict[str, Callable[[int, str, int], Sample]]:
    """The render kinds (:mod:`tailor.world.kinds`) that give training images: name -> ``(seed, style, size)``."""
    from tailor.world.kinds import kinds

    return {name: k.dataset for name, k in kinds().items() if k.dataset is not None}


def _holdout_fn(holdout) -> Callable[[dict[str, Any]], bool] | None:
    """Normalise ``holdout`` (None, iterable of (shape, colour) pairs, or attrs -> bool) to attrs -> excluded."""
    if holdout is None:
        return None
    if callable(holdout):
        return holdout
    pairs = {(canonical("shape", s), canonical("color", c)) for s, c in holdout}

    def excluded(attrs: dict[str, Any]) -> bool:
        objs = attrs["objects"] if isinstance(attrs.get("objects"), list) else [attrs]  # scenes, relation scenes
        return any((o.get("shape"), o.get("color")) in pairs for o in objs)

    return excluded


IDENTITY_LIMIT = 1 << 20  # the renderer draws identities below this


def _identity_range(identities, kind: str) -> tuple[int, int] | None:
    if identities is None:
        return None
    first, stop = (int(v) for v in identities)
    if not 0 <= first < stop <= IDENTITY_LIMIT:
        raise ConfigError(f"identities must be (first, stop) with 0 <= first < stop <= {IDENTITY_LIMIT}; got "
                          f"{tuple(identities)}.")  # fmt: skip
    if kind not in ("faces", "mixed"):
        raise ConfigError(f"identities apply to faces; kind {kind!r} has none (use kind='faces' or 'mixed').")
    return first, stop


class WorldDataset(Dataset):
    """World images for training: ``dict(pixel_values, caption, attrs, mask, edges[, keypoints])``.

    - ``pixel_values``: float32 3xHxW in [-1, 1]; ``mask``/``edges``: float32 1xHxW in {0, 1}.
    - ``keypoints``: float32 (5, 2) pixels, only for ``kind="faces"``.
    - ``kind``: objects | faces | scenes | subject (needs ``subject``) | mixed (objects/faces/scenes 60/20/20), or a
      render kind with a dataset (:func:`render_kinds`: ``relation``, ``pair`` (single views), ``story`` (frames),
      ``light`` (items add ``albedo``, ``foreground``, ``background`` as 3xHxW in [-1, 1]), ``glyph`` (items add the
      glyph image ``glyphs``, 1xHxW in [0, 1])).
    - ``styles``: names from ``STYLES`` or ``"all"``; each item draws one.
    - ``holdout``: (shape, colour) pairs, or a callable ``attrs -> bool``, whose images are never returned.
    - ``identities``: ``(first, stop)``: faces draw their identity uniformly from ``first <= id < stop`` (default:
      any of the renderer's 2**20), so training data can leave out the identities a bench holds out.
    Use :meth:`collate` as the DataLoader's ``collate_fn`` (attrs vary in keys across kinds).
    """

    def __init__(
        self,
        kind: str = "objects",
        size: int = 64,
        seed: int = 0,
        length: int = 10000,
        styles: Iterable[str] | str = ("photo",),
        subject: SubjectSpec | str | None = None,
        holdout: Iterable[tuple[str, str]] | Callable[[dict[str, Any]], bool] | None = None,
        identities: tuple[int, int] | None = None,
    ) -> None:
        if kind not in KINDS and kind not in render_kinds():
            valid = ", ".join([*KINDS, *render_kinds()])
            raise ConfigError(f"unknown world dataset kind {kind!r}; valid kinds are: {valid}.")
        self.kind, self.size, self.seed = kind, check_size(size), check_seed(seed)
        if int(length) < 1:
            raise ConfigError(f"length must be a positive number of items, got {length!r}.")
        self.length = int(length)
        names = list(STYLES) if styles == "all" else [styles] if isinstance(styles, str) else list(styles)
        self.styles = tuple(canonical("style", s) for s in names)
        if not self.styles:
            raise ConfigError(f"styles is empty; pass 'all' or some of: {', '.join(STYLES)}.")
        if kind == "subject" and subject is None:
            raise ConfigError("kind='subject' needs subject=<SubjectSpec, spec string or built-in name>.")
        self.subject = subject if subject is None or isinstance(subject, SubjectSpec) else SubjectSpec.parse(subject)
        self.excluded = _holdout_fn(holdout)
        self.identities = _identity_range(identities, kind)

    def __len__(self) -> int:
        return self.length

    def sample(self, i: int) -> Sample:
        """The :class:`Sample` behind item ``i`` (deterministic in ``(seed, i)``)."""
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a WorldDataset of length {self.length}")
        i %= self.length
        for attempt in range(_MAX_TRIES):
            s = self._render(derive_seed(self.seed, i, attempt))
            if self.excluded is None or not self.excluded(s.attrs):
                return s
        raise ConfigError(f"holdout excludes every image tried for item {i}; it must leave some combinations.")

    def _render(self, seed: int) -> Sample:
        rng = make_rng(seed, 1)
        style = self.styles[int(rng.integers(len(self.styles)))]
        kind = self.kind
        if kind == "mixed":
            kinds, w = list(MIXED_WEIGHTS), np.array(list(MIXED_WEIGHTS.values()))
            kind = kinds[int(np.searchsorted(np.cumsum(w) / w.sum(), rng.random(), side="right"))]
        if kind == "objects":
            return render_object(seed, style=style, size=self.size)
        if kind == "faces":
            identity = None
            if self.identities is not None:  # its own stream: the face's other draws stay those of the seed
                first, stop = self.identities
                identity = first + int(make_rng(seed, 2).integers(stop - first))
            return render_face(seed, identity=identity, style=style, size=self.size)
        if kind == "scenes":
            return render_scene(seed, style=style, size=self.size)
        if kind in render_kinds():
            return render_kinds()[kind](seed, style, self.size)
        return render_subject(self.subject, seed, style=style, size=self.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.sample(int(i))
        item = {
            "pixel_values": torch.from_numpy(s.image).permute(2, 0, 1).float().div_(127.5).sub_(1.0),
            "caption": s.caption,
            "attrs": s.attrs,
            "mask": torch.from_numpy(s.mask).float()[None],
            "edges": torch.from_numpy(s.edges > 0).float()[None],
        }
        if self.kind == "faces":
            item["keypoints"] = torch.from_numpy(s.keypoints)
        for key, arr in s.extras.items():  # light: albedo, foreground, background; glyph: the glyph image
            if key != "mask":
                t = torch.from_numpy(arr).float()
                item[key] = t.permute(2, 0, 1).div_(127.5).sub_(1.0) if t.ndim == 3 else t.div_(255.0)[None]
        return item

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack tensors; keep captions and attrs as lists."""
        out: dict[str, Any] = {}
        for key in batch[0]:
            vals = [b[key] for b in batch]
            out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
        return out
