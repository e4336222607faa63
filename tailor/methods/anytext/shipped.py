"""``--anytext world``: the world AnyText shipped with the zoo (``weights/adapters/anytext/``), registered as the
``artifact:anytext`` resource by this package (:mod:`tailor.core.resources`)."""

from __future__ import annotations

from pathlib import Path

from tailor.errors import InputError

NAME = "anytext"


def folder() -> Path:
    from tailor.world.zoo import WEIGHTS

    return WEIGHTS / "adapters" / NAME


def world(name: str) -> Path | None:
    """``world`` -> the shipped folder (``tailor.load`` reads its ``tailor.json``); None for any other name."""
    if name != "world":
        return None
    if not (folder() / "tailor.json").is_file():
        raise InputError(
            "the world AnyText weights are not shipped in this install; train them with `python -m zoo.anytext "
            "recognizer`, `... anytext` and `... export` from a source checkout, or pass a training --out folder."
        )
    return folder()


def names() -> list[str]:
    return ["world"]
