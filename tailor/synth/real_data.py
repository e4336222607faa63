"""A real detection folder as diffusion training data (``--data coco:DIR``): whole scenes and each annotated object's
square crop, captioned as synthesis prompts its objects — ODGEN's first stage trains on it
(:mod:`tailor.methods.odgen.finetune`, ``tailor synth --finetune STEPS``), and any method can (``tailor train lora
--data coco:DIR``).

The folder is either a ``tailor world render`` folder (``labels.json``: each object's shape, colour and pattern, each
image's style, background and caption) or any COCO folder (``annotations.json``: boxes and class names only). Items,
in this order:

- each whole image, captioned with its own caption (world renders) or ``a scene with a <class> and a <class>`` (COCO);
- each box's crop: a square centred on the box whose side is the box's longer side / :data:`CROP_FILL` (the box fills
  the middle 60% of the crop, as the base's single-object renders fill 44-72% of theirs and synthesis keeps the centre
  60% of each generated object, ``object_crop``), padded by repeating the image's edge where it leaves the image,
  resized to the training size; captioned as synthesis prompts that object (:func:`tailor.synth.plan.caption` of the
  object alone in its scene's style and background: ``a cartoon of a green dotted heart on wood``) when the folder
  tells the attributes, else ``a <class>``.

``tailor/__init__.py`` registers :func:`data` as a ``data`` provider (``coco:`` names), as it does the world's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from tailor.errors import InputError

#: the share of its crop's side a box's longer side fills (synthesis keeps the centre 60% of each object image)
CROP_FILL = 0.6
PREFIX = "coco:"


def square_crop(image: np.ndarray, box, fill: float = CROP_FILL) -> np.ndarray:
    """The square around ``box`` (``[x0, y0, x1, y1]`` pixels) whose side is the box's longer side / ``fill``, centred
    on the box; parts outside the image repeat its edge pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, round(max(x1 - x0, y1 - y0) / fill))
    left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + side - w, top + side - h)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else image
    return padded[top + pad : top + pad + side, left + pad : left + pad + side]


def _world_items(folder: Path) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """(file, objects ``{"box", "class", "caption"}``, scene info ``{"caption"}``) per world render."""
    from tailor.detect.coco import read_world_labels
    from tailor.synth.plan import caption

    out = []
    for r in read_world_labels(folder):
        attrs = r.get("attrs") or {}
        style, background = attrs.get("style") or "photo", attrs.get("background")
        objs = []
        for o in r.get("objects") or []:
            if not (o.get("box") and o.get("shape")):
                continue
            obj = {"name": o["shape"], "color": o.get("color") or None, "pattern": o.get("pattern") or None}
            program = {"objects": [obj], "relations": [], "background": background, "style": style}
            objs.append({"box": list(o["box"]), "class": o["shape"], "caption": caption(program)})
        out.append((r["file"], objs, {"caption": r.get("caption") or _scene_caption(objs)}))
    return out


def _coco_items(folder: Path) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    from tailor.detect.coco import read_coco

    coco = read_coco(folder)
    out = []
    for im, objs in zip(coco.images, coco.objects):
        objs = [{"box": o["box"], "class": o["class"], "caption": f"a {o['class']}"} for o in objs]
        out.append((str(im["file"]), objs, {"caption": _scene_caption(objs)}))
    return out


def _scene_caption(objs: list[dict[str, Any]]) -> str:
    return "a scene with " + " and ".join(f"a {o['class']}" for o in objs) if objs else "a scene"


class RealScenesAndCrops(Dataset):
    """Whole images and box crops of a real detection folder (see the module docstring), ``size`` px, in a fixed order
    (the images, then the crops image by image); ``counts`` = (images, crops)."""

    def __init__(self, folder: str | Path, size: int):
        from PIL import Image

        from tailor.core.images import to_tensor

        folder = Path(folder)
        if not folder.exists():
            raise InputError(f"real data {folder} does not exist; pass a COCO folder or a `tailor world render` "
                             f"folder.")  # fmt: skip
        world = folder.is_dir() and (folder / "labels.json").is_file()
        items = _world_items(folder) if world else _coco_items(folder)
        root = folder if folder.is_dir() else folder.parent
        if not any(objs for _, objs, _ in items):
            raise InputError(f"real data {folder} has no annotated boxes; pass a COCO folder whose annotations.json "
                             f"holds boxes (or a `tailor world render --kind relation` folder).")  # fmt: skip
        self.size, self.world = int(size), world
        scenes, crops = [], []
        for file, objs, scene in items:
            with Image.open(root / file) as im:
                image = np.asarray(im.convert("RGB"))
            scenes.append((to_tensor(image, size), scene["caption"]))
            for o in objs:
                crops.append((to_tensor(square_crop(image, o["box"]), size), o["caption"]))
        self.items = scenes + crops
        self.counts = (len(scenes), len(crops))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pixels, text = self.items[i]
        return {"pixel_values": pixels, "caption": text}


def data(source: str) -> Callable | None:
    """``coco:DIR`` -> ``factory(size, seed, holdout) -> (scenes and crops, None)`` (no held-out part)."""
    if not source.startswith(PREFIX):
        return None
    folder = source[len(PREFIX) :]
    if not folder:
        raise InputError("data 'coco:' needs a folder: write coco:DIR (a COCO or `tailor world render` folder).")
    return lambda size, seed, holdout: (RealScenesAndCrops(folder, size), None)


def data_names() -> list[str]:
    return ["coco:<folder>"]
