"""World training data (``TrainConfig.data``): ``world`` / ``world:<kind>`` / ``world:<kind>:<styles>`` and
``world-subject:<builtin name or spec string>``, served to the trainer through the ``data`` resource kind
(:mod:`tailor.core.resources`; registered in :mod:`tailor.world.resources`).

Styles are ``all`` or ``photo+sketch+...`` (default photo); faces also take ``:ids=FIRST-STOP`` (identities
``FIRST <= id < STOP``; ``ids=FIRST-`` up to the renderer's last, e.g. ``world:faces:all:ids=1000-``). A held-out
set is the items after the training range (procedural data) or the last fifth of a subject's renders.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset, Subset

from tailor.errors import InputError
from tailor.world.dataset import IDENTITY_LIMIT, WorldDataset
from tailor.world.subjects import SubjectSpec

#: the built-in data kinds; the render kinds with a dataset (relation, pair, story, light, glyph) come on top
WORLD_KINDS = ("objects", "faces", "scenes", "mixed")


def world_kinds() -> tuple[str, ...]:
    """Every ``world:<kind>`` data name: the built-in kinds and the render kinds that give training images."""
    from tailor.world.dataset import render_kinds

    return (*WORLD_KINDS, *render_kinds())


WORLD_TRAIN_ITEMS = 100_000  # procedural: items are rendered on demand, so a long "epoch" costs nothing
WORLD_VAL_ITEMS = 32  # held-out world items for validation loss (indices after the training range)
#: what ``data`` names this module serves (for messages)
SOURCES = ("world[:kind[:styles][:ids=A-B]]", "world-subject:<name or spec>")


def is_world_source(source: str) -> bool:
    return source == "world" or source.startswith(("world:", "world-subject:"))


def _subject(spec: str) -> SubjectSpec:
    """A world subject from a builtin name or a spec string."""
    try:
        return SubjectSpec.parse(spec)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"world subject {spec!r} is neither a builtin subject nor a valid spec ({e}).") from e


def _identity_field(source: str, value: str) -> tuple[int, int]:
    """``FIRST-STOP`` (``FIRST <= id < STOP``) or ``FIRST-`` (to the renderer's last identity)."""
    first, _, stop = value.partition("-")
    try:
        return int(first), int(stop) if stop else IDENTITY_LIMIT
    except ValueError:
        raise InputError(f"data {source!r}: ids={value!r} is not FIRST-STOP; write ids=1000- or ids=0-800.") from None


def world_datasets(source: str, size: int, seed: int, holdout: bool) -> tuple[Dataset, Dataset | None]:
    """(training set, held-out set or None) of a world source."""
    head, _, arg = source.partition(":")
    if head == "world-subject":
        if not arg:
            raise InputError("data 'world-subject:' needs a subject name or spec, e.g. world-subject:<name>.")
        full = WorldDataset(kind="subject", size=size, seed=seed, subject=_subject(arg))
        n = len(full)
        if not holdout:
            return full, None
        n_val = min(WORLD_VAL_ITEMS, max(1, n // 5))
        if n - n_val < 1:
            raise InputError(f"world subject {arg!r} has {n} images, too few to hold any out; set val_fraction=0.")
        return Subset(full, range(n - n_val)), Subset(full, range(n - n_val, n))
    kind, *fields = arg.split(":")
    kind = kind or "mixed"
    if kind not in world_kinds():
        raise InputError(f"unknown world data kind {kind!r}; use one of {', '.join(world_kinds())}.")
    n_val = WORLD_VAL_ITEMS if holdout else 0
    opts: dict[str, Any] = {}
    for f in fields:
        if f.startswith("ids="):
            opts["identities"] = _identity_field(source, f[4:])
        elif f and "styles" not in opts:
            opts["styles"] = "all" if f == "all" else f.split("+")
        elif f:
            raise InputError(f"data {source!r} has an extra field {f!r}; write world:<kind>[:<styles>][:ids=A-B].")
    full = WorldDataset(kind=kind, size=size, seed=seed, length=WORLD_TRAIN_ITEMS + n_val, **opts)
    if not holdout:
        return full, None
    return Subset(full, range(WORLD_TRAIN_ITEMS)), Subset(full, range(WORLD_TRAIN_ITEMS, WORLD_TRAIN_ITEMS + n_val))
