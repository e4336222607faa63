"""``--controlgpt controlgpt-sketch`` (or ``world``): the world Control-GPT shipped with the zoo
(``weights/adapters/controlgpt-sketch/``), registered as the ``artifact:controlgpt`` resource by this package."""

from __future__ import annotations

from tailor.world.zoo import ShippedMethod

SHIPPED = ShippedMethod(
    "controlgpt-sketch",
    ("controlgpt-sketch", "world"),
    "the world Control-GPT weights (controlgpt-sketch) are not shipped in this install; train them with `python -m "
    "zoo.controlgpt train` and `... export` from a source checkout, or pass a training --out folder.",
)
folder, world, names = SHIPPED.folder, SHIPPED.world, SHIPPED.names
