"""IC-Light's training data: lit triplets of world scenes (exact light transport from the world renderer).

Each item of a ``world:light`` dataset (:mod:`tailor.world.light`) is re-rendered as one scene (same seed: same
albedo, normals, mask, style) under three light sets drawn from ``(render seed, STREAM)``:

* ``A = [ambient / 2, l1]``, ``B = [ambient / 2, l2]`` and ``AB = [ambient, l1, l2]``, two directional / point
  lights from different sides, so ``linear(A) + linear(B) == linear(AB)`` (the renderer sums lights in linear RGB);
* ``C``: an independent light set; the subject lit by ``C`` on grey is the **foreground** input, prepared as the
  official demo does (``127 + (rgb - 127) * alpha``, :func:`.prepare.foreground_array`), so the model must see
  through the foreground's own lighting.

An item holds the three targets ``pixel_values`` ``[3, 3, H, W]`` in [-1, 1] (rows A, B, AB), their ``caption`` s
(fc: the caption names the lights, ``... lit from the left by warm light``; fbc: the lights are left out of the text,
the lit **background** ``[3, 3, H, W]`` carries them), the ``foreground`` ``[3, H, W]`` (the demo's ``x / 127 - 1``)
and the subject's ``mask`` ``[1, H, W]``. :func:`expand` turns a batch of items into the UNet's rows; the three rows of
an item share their sample position, hence their noise, timestep and caption dropout, which the light-transport
consistency loss needs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from tailor.methods.ic_light.prepare import foreground_array, to_model_range

STREAM = 7321  # the lights of an item: make_rng(render seed, STREAM)
ROWS = ("A", "B", "AB")


def lit_world(dataset: Any) -> tuple[Any, list[int] | None] | None:
    """``(WorldDataset of kind light, index map or None)`` behind ``dataset`` (itself or a ``Subset``), else None."""
    from tailor.world.dataset import WorldDataset

    index = None
    if isinstance(dataset, Subset):
        index, dataset = list(dataset.indices), dataset.dataset
    if isinstance(dataset, WorldDataset) and dataset.kind == "light":
        return dataset, index
    return None


def triplet_lights(seed: int) -> dict[str, list]:
    """The light sets ``A``, ``B``, ``AB`` (additive: ``A + B == AB``) and ``C`` (the foreground's) of a scene."""
    from tailor.world.light import sample_lights
    from tailor.world.vocab import make_rng

    rng = make_rng(seed, STREAM)
    amb, l1, l2 = sample_lights(rng, n=2)
    half = replace(amb, intensity=amb.intensity / 2)
    return {"A": [half, l1], "B": [half, l2], "AB": [amb, l1, l2], "C": sample_lights(rng)}


def strip_lights(caption: str, lights: list) -> str:
    """The caption without its trailing light phrase (fbc: the background carries the light)."""
    from tailor.world.light import light_phrase

    tail = ", " + light_phrase(lights)
    return caption[: -len(tail)] if caption.endswith(tail) else caption


def foreground_rgba(image: np.ndarray, mask: np.ndarray) -> Image.Image:
    """A render and its subject mask as the RGBA image a user gives ``--foreground`` (alpha = the object)."""
    return Image.fromarray(np.dstack([image, (np.asarray(mask) > 0).astype(np.uint8) * 255]), "RGBA")


class LitTriplets(Dataset):
    """Lit triplets of the scenes of a ``world:light`` dataset (see the module docstring)."""

    def __init__(self, world: Any, index: list[int] | None, mode: str):
        self.world, self.index, self.mode = world, index, mode

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.world)

    def scene(self, i: int) -> tuple[int, str]:
        """(render seed, style) of item ``i``."""
        s = self.world.sample(self.index[i] if self.index is not None else i)
        return int(s.attrs["seed"]), str(s.attrs["style"])

    def renders(self, i: int) -> dict[str, Any]:
        """The scene of item ``i`` under A, B, AB and C (world ``Sample`` s) and the light sets."""
        from tailor.world.light import render_lit

        seed, style = self.scene(i)
        lights = triplet_lights(seed)
        size = self.world.size
        out = {k: render_lit(seed, lights=v, style=style, size=size) for k, v in lights.items()}
        return {"samples": out, "lights": lights}

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.renders(int(i))
        s, lights = r["samples"], r["lights"]
        size = self.world.size
        fg = foreground_array(foreground_rgba(s["C"].image, s["C"].mask), size, size)
        item = {
            "pixel_values": torch.stack([_pixels(s[k].image) for k in ROWS]),
            "caption": [s[k].caption if self.mode == "fc" else strip_lights(s[k].caption, lights[k]) for k in ROWS],
            "foreground": to_model_range([fg])[0],
            "mask": torch.from_numpy(s["AB"].mask.astype(np.float32))[None],
        }
        if self.mode == "fbc":
            item["background"] = to_model_range([s[k].extras["background"] for k in ROWS])
        return item


def _pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def expand(batch: dict[str, Any], keys: list, positions: list[int]) -> tuple[dict[str, Any], list, list[int]]:
    """B triplets -> 3B rows ``[A_1..A_B, B_1..B_B, AB_1..AB_B]``; each row keeps its item's position (shared noise,
    timestep and dropout); cache keys ``(100 + row, index)``. A batch of plain items is returned as it is."""
    px = batch.get("pixel_values")
    if not isinstance(px, torch.Tensor) or px.ndim != 5:
        return batch, keys, positions
    n = px.shape[0]
    rows: dict[str, Any] = {
        "pixel_values": px.transpose(0, 1).reshape(3 * n, *px.shape[2:]),
        "caption": [c[r] for r in range(3) for c in batch["caption"]],
        "foreground": batch["foreground"].repeat(3, 1, 1, 1),
        "mask": batch["mask"].repeat(3, 1, 1, 1),
        "triplets": n,
    }
    if "background" in batch:
        bg = batch["background"]
        rows["background"] = bg.transpose(0, 1).reshape(3 * n, *bg.shape[2:])
    new_keys = [(100 + r, k[1]) for r in range(3) for k in keys]
    return rows, new_keys, [p for _ in range(3) for p in positions]
