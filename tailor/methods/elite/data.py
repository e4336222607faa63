"""ELITE's training items and reference inputs.

:class:`PairViews` adds ``ref_pixel_values`` / ``ref_mask`` (the reference the mappers read) to each item and names
the subject by the placeholder in the caption. World object pairs (``--data world:pair``: ``attrs["kind"] ==
"pair"``): the reference is another view of the same instance (a photo in another scene, pose, scale and light,
:func:`tailor.world.pairs.render_view`) and ``a photo of a red and white striped star on grass`` becomes ``a photo of
a S on grass``, so the image carries the subject and the text the scene. Other items are their own reference (the
official OpenImages recipe: the object's box of the same image) with its mask when the data has one, and a template
caption (the official ``imagenet_templates_small``).

:func:`reference_tensors`: a reference image (and optional mask) at generation -> tensors; a mask of another size
than the image is refused in one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tailor.errors import InputError

TEMPLATES = ("a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
             "a photo of a clean {}", "a close-up photo of a {}", "a bright photo of the {}", "a photo of one {}",
             "a good photo of a {}", "a photo of the small {}", "a photo of the large {}")  # fmt: skip
REF_SALT = 7919  # the reference view's seed: derived from the target's, never equal to it


class PairViews(Dataset):
    def __init__(self, dataset: Dataset, placeholder: str):
        self.dataset, self.placeholder = dataset, placeholder

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        attrs = item.get("attrs") if isinstance(item.get("attrs"), dict) else {}
        size = int(item["pixel_values"].shape[-1])
        if attrs.get("kind") == "pair" and "instance_id" in attrs:
            return self._pair(item, attrs, size)
        mask = item.get("mask")
        item["ref_pixel_values"] = item["pixel_values"]
        item["ref_mask"] = mask if isinstance(mask, torch.Tensor) else torch.ones(1, size, size)
        item.setdefault("mask", item["ref_mask"])
        item["caption"] = TEMPLATES[(i * 31) % len(TEMPLATES)].format(self.placeholder)
        return item

    def _pair(self, item: dict[str, Any], attrs: dict[str, Any], size: int) -> dict[str, Any]:
        from tailor.world.captions import _a
        from tailor.world.pairs import describe, instance_attrs, render_view
        from tailor.world.vocab import derive_seed

        inst = instance_attrs(int(attrs["instance_id"]))
        ref = render_view(inst, derive_seed(int(attrs.get("seed", 0)), REF_SALT), style="photo", size=size)
        item["ref_pixel_values"] = torch.from_numpy(ref.image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        item["ref_mask"] = torch.from_numpy(ref.mask).float()[None]
        phrase = _a(describe(inst))
        caption = str(item.get("caption", ""))
        item["caption"] = (caption.replace(phrase, f"a {self.placeholder}", 1) if phrase in caption
                           else f"a photo of a {self.placeholder}")  # fmt: skip
        return item


def _image(value) -> Image.Image:
    from tailor.core.images import load_image

    if isinstance(value, list | tuple):
        if not value:
            raise InputError("elite got no reference image; pass one (--elite MODEL=IMG).")
        value = value[0]
    if isinstance(value, str | Path):
        return load_image(value)
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, np.ndarray) and value.ndim == 3:
        return Image.fromarray(value.astype(np.uint8)).convert("RGB")
    raise InputError(f"an ELITE reference must be an image file or a PIL image; got {type(value).__name__}.")


def _mask(value, size: tuple[int, int]) -> np.ndarray:
    """A mask (a file, a PIL image or an HxW array; nonzero = the subject) of exactly ``size`` (width, height)."""
    what = "the --elite-mask"
    if isinstance(value, str | Path):
        from tailor.core.images import load_image

        what = f"--elite-mask {value}"
        value = load_image(value)
    arr = np.asarray(value.convert("L") if isinstance(value, Image.Image) else value)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D mask image; got an array of shape {arr.shape}.")
    if (arr.shape[1], arr.shape[0]) != tuple(size):
        raise InputError(f"{what} is {arr.shape[1]}x{arr.shape[0]} but the reference image is {size[0]}x{size[1]}; "
                         f"give a mask of the reference's size.")  # fmt: skip
    if not (arr > 0).any():
        raise InputError(f"{what} is empty (all zero); mark the subject's pixels.")
    return arr > 0


def reference_tensors(value, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3, H, W)`` in [-1, 1] and ``(1, 1, H, W)`` in {0, 1} for a reference (PIL, path, or a ready
    ``(tensor, mask tensor)`` pair); no mask = the whole image."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        ref, m = value
        return ref[None].float(), m[None].float()
    image = _image(value)
    m = _mask(mask, image.size) if mask is not None else np.ones((image.height, image.width), bool)
    ref = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)[None]
    return ref, torch.from_numpy(m.astype(np.float32))[None, None]


def shipped(name: str) -> Path | None:
    """``world`` -> the folder of the world ELITE weights (``tailor/world/zoo/weights/adapters/elite``)."""
    if name != "world":
        return None
    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "adapters" / "elite"
    if not (folder / "tailor.json").is_file():
        raise InputError("the world ELITE weights are not in this install; train them with `python -m zoo.elite "
                         "global RUNS`, `... local RUNS`, `... export RUNS`, or pass a trained ELITE.")  # fmt: skip
    return folder


def shipped_names() -> list[str]:
    return ["world"]
