"""``--infinite-id world``: the shipped world Infinite-ID weights (``tailor/world/zoo/weights/adapters/infinite-id``,
trained by the source checkout's ``zoo/infinite_id.py``), as ``--instantid world``. Registered by the method's
``__init__`` as a string provider, so nothing under ``tailor.world`` is imported until the name is used."""

from __future__ import annotations

from pathlib import Path

SHIPPED = "infinite-id"  # the folder under weights/adapters (also a bare name: ``--infinite-id infinite-id``)


def shipped(name: str) -> Path | None:
    """``world`` -> the folder of the shipped world weights (the zoo's "not trained yet" sentence when missing)."""
    if name != "world":
        return None
    from tailor.world.zoo import adapter_path

    return adapter_path(SHIPPED)


def shipped_names() -> list[str]:
    return ["world"]
