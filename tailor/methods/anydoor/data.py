"""AnyDoor's training pairs and generation inputs.

:class:`AnyDoorPairs` turns each item of ``--data world:pair`` (one view of an object instance, with its mask) into a
training pair, a pure function of the item index: with probability ``cross_pose`` the object comes from another view
of the same instance (another background, pose, scale and light: ``render_view`` with a derived seed, a photo) and
the pair's timestep class is 1 (rotation change >= ``pose_change``: t in [T/2, T)) or 2 (uniform); otherwise the
object is the target's own (the paper's still-image pairs, class 0: t in [0, T/2)). The object is cut out on white
(:func:`~tailor.methods.anydoor.hf.object_square`, crop grown by a ratio in ``object_expand``, flipped half the
time as the official augmentation), its HF map goes into the target's box grown by a ratio in ``box_grow``
(:func:`~tailor.methods.anydoor.hf.collage`). Items gain ``anydoor_object`` (3xSxS in [0, 1], zeros for a dropped
object), ``anydoor_hint`` (4xHxW) and ``anydoor_dynamic``; the caption is emptied (the text is not read).

:func:`object_input` / :func:`scene_input` / :func:`parse_box`: the generation inputs from files, checked (one
sentence per bad input: a box outside the scene, an object that is all background, a mask of another size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tailor.core.images import image_input
from tailor.errors import ConfigError, InputError
from tailor.methods.anydoor.hf import collage, grow_box, hf_map, mask_box, object_square

OBJECT_SIZE = 64  # the object square handed to the encoder (resized again to its input size)
REF_SIZE = 256  # training objects are rendered at this size (a sharp object photo, as the official's 224-px crops)
REF_SALT = 9241  # the other view's seed: derived from the target's, never equal to it
PAIR_STREAM = 31
WHITE = 250  # an object image without alpha or mask: pixels whiter than this in every channel are background


def rotation_change(a: float, b: float) -> float:
    """|a - b| in degrees, folded to [0, 90] (the world's rotations span 180 degrees)."""
    d = abs(float(a) - float(b)) % 180.0
    return min(d, 180.0 - d)


def to_uint8(pixel_values: torch.Tensor) -> np.ndarray:
    return ((pixel_values.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def object_tensor(square: np.ndarray) -> torch.Tensor:
    """A uint8 object square -> 3 x OBJECT_SIZE x OBJECT_SIZE float in [0, 1]."""
    img = Image.fromarray(square).resize((OBJECT_SIZE, OBJECT_SIZE), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)


class AnyDoorPairs(Dataset):
    def __init__(self, dataset: Dataset, config, seed: int = 0):
        self.dataset, self.config, self.seed = dataset, config, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from tailor.core.training.noise import seed_for

        c = self.config
        item = dict(self.dataset[i])
        if not isinstance(item.get("mask"), torch.Tensor):
            raise ConfigError("anydoor trains on data with object masks (world:pair); this data has none.")
        rng = np.random.default_rng(seed_for(self.seed, PAIR_STREAM, int(i) % len(self)))
        target = to_uint8(item["pixel_values"])
        tmask = item["mask"][0].numpy() > 0.5
        if not tmask.any():
            raise ConfigError(f"training item {i} has an empty object mask; anydoor needs the object's mask.")
        attrs = item.get("attrs") if isinstance(item.get("attrs"), dict) else {}
        cross = attrs.get("kind") == "pair" and "instance_id" in attrs and rng.random() < c.cross_pose
        if cross:
            ref, rmask, turn = self._other_view(attrs)
            dynamic = 1 if turn >= c.pose_change else 2
        elif attrs.get("kind") == "pair" and "instance_id" in attrs:
            ref, rmask, dynamic = *self._same_view(attrs), 0
        else:
            ref, rmask, dynamic = target, tmask, 0
        square, smask = object_square(ref, rmask, float(rng.uniform(*c.object_expand)))
        if rng.random() < 0.5:  # the official augmentation's horizontal flip
            square, smask = square[:, ::-1].copy(), smask[:, ::-1].copy()
        h, w = target.shape[:2]
        box = grow_box(mask_box(tmask), float(rng.uniform(*c.box_grow)), w, h)
        hint = collage(target, box, hf_map(square, smask) if c.detail else None)
        obj = object_tensor(square)
        if rng.random() < c.drop_object:
            obj = torch.zeros_like(obj)
        item.update(
            caption="",
            anydoor_object=obj,
            anydoor_hint=torch.from_numpy(hint).permute(2, 0, 1).contiguous(),
            anydoor_dynamic=torch.tensor(dynamic),
            anydoor_box=torch.tensor(box),
        )
        return item

    @staticmethod
    def _other_view(attrs: dict[str, Any]):
        """Another scene of the same instance (a photo at REF_SIZE) and the rotation change to the target."""
        from tailor.world.pairs import instance_attrs, render_view
        from tailor.world.vocab import derive_seed

        inst = instance_attrs(int(attrs["instance_id"]))
        ref = render_view(inst, derive_seed(int(attrs.get("seed", 0)), REF_SALT), style="photo", size=REF_SIZE)
        return ref.image, ref.mask > 0, rotation_change(ref.attrs["rotation"], attrs.get("rotation", 0.0))

    @staticmethod
    def _same_view(attrs: dict[str, Any]):
        """The target itself rendered at REF_SIZE (the same draws: pose, background, style and light scale with it)."""
        from tailor.world.pairs import instance_attrs, render_view

        keep = {k: attrs[k] for k in ("background", "style", "scale", "rotation", "light", "template") if k in attrs}
        ref = render_view(instance_attrs(int(attrs["instance_id"])), int(attrs["seed"]), size=REF_SIZE, **keep)
        return ref.image, ref.mask > 0


# ---------------------------------------------------------------------- generation inputs
def _first(value, what: str):
    if isinstance(value, list | tuple):
        if not value:
            raise InputError(f"anydoor got no {what}; pass one.")
        value = value[0]
    return value


def object_input(image, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """The object (uint8 HxWx3) and its mask (HxW bool): from ``mask`` (a file / image / array of the object image's
    size, nonzero = object), else the image's alpha channel, else its non-white pixels (background removal for an
    object on white)."""
    img = image_input(_first(image, "object image"), "--object")
    rgba = img.convert("RGBA") if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else None
    rgb = np.asarray(img.convert("RGB"))
    if mask is not None:
        m = np.asarray(image_input(mask, "--object-mask").convert("L"))
        if m.shape != rgb.shape[:2]:
            raise InputError(f"--object-mask is {m.shape[1]}x{m.shape[0]} but the --object image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}; give a mask of the object image's size.")  # fmt: skip
        m = m > 127
    elif rgba is not None:
        m = np.asarray(rgba)[..., 3] > 127
    else:
        m = (rgb < WHITE).any(axis=-1)
    if not m.any():
        raise InputError(
            "the --object image is all background (no object pixel in its mask, alpha or non-white "
            "pixels); pass the object on a white or transparent background, or an --object-mask."
        )
    return rgb, m


def scene_input(scene) -> np.ndarray:
    if scene is None:
        raise InputError("anydoor needs the scene to place the object in; pass --scene IMG.")
    return np.asarray(image_input(scene, "--scene").convert("RGB"))


def parse_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """``x0,y0,x1,y1`` (pixels of the scene, x1/y1 exclusive), checked against the scene's size."""
    if box is None:
        raise InputError("anydoor needs the box to place the object in; pass --box x0,y0,x1,y1 (scene pixels).")
    try:
        vals = [int(round(float(v))) for v in (box.split(",") if isinstance(box, str) else box)]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4:
        raise InputError(f"--box {box!r} is not four numbers; write x0,y0,x1,y1 in scene pixels, e.g. 16,16,48,48.")
    x0, y0, x1, y1 = vals
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"--box {x0},{y0},{x1},{y1} lies outside the {width}x{height} --scene; give "
                         f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}.")  # fmt: skip
    return x0, y0, x1, y1


def prepare(inputs: dict[str, Any], detail: bool) -> dict[str, Any]:
    """Check and prepare the generation inputs once: the object square (tensor), the scene and box, the HF map."""
    rgb, m = object_input(inputs.get("object"), inputs.get("object_mask"))
    scene = scene_input(inputs.get("scene"))
    box = parse_box(inputs.get("box"), scene.shape[1], scene.shape[0])
    square, smask = object_square(rgb, m, 1.2)
    return {"object": object_tensor(square)[None], "scene": scene, "box": box,
            "detail": hf_map(square, smask) if detail else None}  # fmt: skip


def hint_at(prepared: dict[str, Any], width: int, height: int) -> torch.Tensor:
    """The 1x4xHxW hint at the output size (scene resized, box scaled with it)."""
    scene, (x0, y0, x1, y1) = prepared["scene"], prepared["box"]
    sh, sw = scene.shape[:2]
    if (sw, sh) != (width, height):
        scene = np.asarray(Image.fromarray(scene).resize((width, height), Image.BICUBIC))
        fx, fy = width / sw, height / sh
        x0, x1 = int(round(x0 * fx)), max(int(round(x1 * fx)), int(round(x0 * fx)) + 1)
        y0, y1 = int(round(y0 * fy)), max(int(round(y1 * fy)), int(round(y0 * fy)) + 1)
    hint = collage(scene, (x0, y0, x1, y1), prepared["detail"])
    return torch.from_numpy(hint).permute(2, 0, 1)[None].contiguous()


def shipped(name: str) -> Path | None:
    """``world`` -> the folder of the world AnyDoor weights (``tailor/world/zoo/weights/adapters/anydoor``)."""
    if name != "world":
        return None
    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "adapters" / "anydoor"
    if not (folder / "tailor.json").is_file():
        raise InputError("the world AnyDoor weights are not in this install; train them with `python -m zoo.anydoor "
                         "train RUNS` and `... export RUNS`, or pass a trained AnyDoor.")  # fmt: skip
    return folder


def shipped_names() -> list[str]:
    return ["world"]
