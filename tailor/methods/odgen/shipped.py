"""``--odgen odgen`` (or ``world``): the world ODGEN shipped with the zoo (``weights/adapters/odgen/``), registered
as the ``artifact:odgen`` resource by this package."""

from __future__ import annotations

from tailor.world.zoo import ShippedMethod

SHIPPED = ShippedMethod(
    "odgen",
    ("odgen", "world"),
    "the world ODGEN weights (odgen) are not shipped in this install; train them with `python -m zoo.odgen "
    "train` and `... export` from a source checkout, or pass a training --out folder.",
)
folder, world, names = SHIPPED.folder, SHIPPED.world, SHIPPED.names
