"""``--controlgpt controlgpt-sketch`` (or ``world``): the world Control-GPT shipped with the zoo
(``weights/adapters/controlgpt-sketch/``), registered as the ``artifact:controlgpt`` resource by this package."""

from __future__ import annotations

from pathlib import Path

NAME = "controlgpt-sketch"
ALIASES = ("controlgpt-sketch", "world")


def folder() -> Path:
    from tailor.world.zoo import WEIGHTS

    return WEIGHTS / "adapters" / NAME


def world(name: str) -> Path | None:
    """``controlgpt-sketch`` / ``world`` -> the shipped folder (``tailor.load`` reads its ``tailor.json``)."""
    from tailor.world.zoo import shipped_method

    return shipped_method(
        NAME,
        name,
        ALIASES,
        f"the world Control-GPT weights ({NAME}) are not shipped in this install; train them with `python -m "
        f"zoo.controlgpt train` and `... export` from a source checkout, or pass a training --out folder.",
    )


def names() -> list[str]:
    return list(ALIASES)
