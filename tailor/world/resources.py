"""The world's named resources, registered into :mod:`tailor.core.resources` by ``tailor/__init__.py`` as
``"tailor.world.resources:<function>"`` strings (nothing here is imported until a name is resolved).

Each provider answers a name it knows with a path (or a data factory) and None for any other name; a known name whose
weights are missing raises the zoo's one-sentence "not trained yet" error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tailor.world import zoo


def base(name: str) -> Path | None:
    """``world`` -> the shipped base model's diffusers folder."""
    return zoo.base_path() if name == "world" else None


def image_encoder(name: str) -> Path | None:
    """``world`` -> the world CLIP's vision tower (``CLIPVisionModelWithProjection`` folder)."""
    return zoo.clip_vision_path() if name == "world" else None


def world_names() -> list[str]:
    return ["world"]


def artifact(name: str) -> Path | None:
    """A shipped adapter name (``canny``, ``world-plus``, ...) or the name of any other method's shipped folder
    (``odgen``, ``anytext``, ``elite``, ...: ``weights/adapters/<name>/``) -> that folder (``tailor.load`` reads
    it)."""
    if name in zoo.ADAPTERS:
        return zoo.adapter_path(name)
    return zoo.WEIGHTS / "adapters" / name if name in _method_folders() else None


def artifact_names() -> list[str]:
    return list(zoo.ADAPTERS) + [n for n in _method_folders() if n not in zoo.ADAPTERS]


def _method_folders() -> list[str]:
    """The shipped folders ``weights/adapters/<name>/`` with a ``tailor.json`` (the methods with their own recipes
    ship there too: ``anydoor``, ``anytext``, ``controlgpt-sketch``, ``elite``, ``odgen``, ``photoverse``)."""
    root = zoo.WEIGHTS / "adapters"
    return sorted(p.parent.name for p in root.glob("*/tailor.json")) if root.is_dir() else []


def _identity(kind: str, name: str) -> Path | None:
    return zoo.identity_adapter(kind) if name == "world" else None


def instantid(name: str) -> Path | None:
    """``world`` given to ``instantid`` -> the shipped world InstantID weights."""
    return _identity("instantid", name)


def photomaker(name: str) -> Path | None:
    """``world`` given to ``photomaker`` -> the shipped world PhotoMaker weights."""
    return _identity("photomaker", name)


def pulid(name: str) -> Path | None:
    """``world`` given to ``pulid`` -> the shipped world PuLID weights."""
    return _identity("pulid", name)


def storygen(name: str) -> Path | None:
    """``world`` given to ``storygen`` -> the shipped world StoryGen context module."""
    return zoo.method_adapter("storygen") if name == "world" else None


def data(source: str) -> Callable | None:
    """``world[:...]`` / ``world-subject:...`` -> ``factory(size, seed, holdout) -> (train, held-out or None)``."""
    from tailor.world import sources

    if not sources.is_world_source(source):
        return None
    return lambda size, seed, holdout: sources.world_datasets(source, size, seed, holdout)


def data_names() -> list[str]:
    from tailor.world.sources import SOURCES

    return list(SOURCES)
