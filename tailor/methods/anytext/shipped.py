"""``--anytext world``: the world AnyText shipped with the zoo (``weights/adapters/anytext/``), registered as the
``artifact:anytext`` resource by this package (:mod:`tailor.core.resources`)."""

from __future__ import annotations

from pathlib import Path

NAME = "anytext"
ALIASES = ("world",)


def folder() -> Path:
    from tailor.world.zoo import WEIGHTS

    return WEIGHTS / "adapters" / NAME


def world(name: str) -> Path | None:
    """``world`` -> the shipped folder (``tailor.load`` reads its ``tailor.json``); None for any other name."""
    from tailor.world.zoo import shipped_method

    return shipped_method(
        NAME,
        name,
        ALIASES,
        "the world AnyText weights are not shipped in this install; train them with `python -m zoo.anytext "
        "recognizer`, `... anytext` and `... export` from a source checkout, or pass a training --out folder.",
    )


def names() -> list[str]:
    return list(ALIASES)
