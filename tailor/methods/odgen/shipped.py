"""``--odgen odgen`` (or ``world``): the world ODGEN shipped with the zoo (``weights/adapters/odgen/``), registered
as the ``artifact:odgen`` resource by this package."""

from __future__ import annotations

from pathlib import Path

NAME = "odgen"
ALIASES = ("odgen", "world")


def folder() -> Path:
    from tailor.world.zoo import WEIGHTS

    return WEIGHTS / "adapters" / NAME


def world(name: str) -> Path | None:
    """``odgen`` / ``world`` -> the shipped folder (``tailor.load`` reads its ``tailor.json``)."""
    from tailor.world.zoo import shipped_method

    return shipped_method(
        NAME,
        name,
        ALIASES,
        f"the world ODGEN weights ({NAME}) are not shipped in this install; train them with `python -m zoo.odgen "
        f"train` and `... export` from a source checkout, or pass a training --out folder.",
    )


def names() -> list[str]:
    return list(ALIASES)
