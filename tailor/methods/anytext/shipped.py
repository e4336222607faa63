"""``--anytext world``: the world AnyText shipped with the zoo (``weights/adapters/anytext/``), registered as the
``artifact:anytext`` resource by this package (:mod:`tailor.core.resources`)."""

from __future__ import annotations

from tailor.world.zoo import ShippedMethod

SHIPPED = ShippedMethod(
    "anytext",
    ("world",),
    "the world AnyText weights are not shipped in this install; train them with `python -m zoo.anytext "
    "recognizer`, `... anytext` and `... export` from a source checkout, or pass a training --out folder.",
)
folder, world, names = SHIPPED.folder, SHIPPED.world, SHIPPED.names
