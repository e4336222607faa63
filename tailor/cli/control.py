"""``tailor generate --control MODEL:IMG[:scale[:start:end]]``: spatial control (ControlNet, Zhang et al. 2023;
T2I-Adapter, Mou et al. 2023) from the command line.

MODEL is a trained control model (a training ``--out`` folder, its ``.safetensors``, a diffusers ControlNet/adapter
weight file) or the name of one shipped with the world zoo (``canny``, ``seg``, ``t2i-canny``, ``controlnext-canny``;
a path of that name wins); its metadata names the method and the condition kind. IMG is an image the condition is
extracted from (resized to the output size first), or with ``--control-map`` a ready condition map used as it is.
The flag repeats: several control models attach at once, each with its own scale and start/end window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tailor.errors import ConfigError


@dataclass
class ControlSpec:
    model: str
    image: str
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def parse_control(spec: str) -> ControlSpec:
    """``MODEL:IMG[:scale[:start:end]]`` -> :class:`ControlSpec`."""
    parts = spec.split(":")
    nums: list[float] = []
    while len(parts) > 2 and len(nums) < 3:
        try:
            nums.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"--control {spec!r}: give MODEL:IMG, MODEL:IMG:scale or MODEL:IMG:scale:start:end.")
    if len(nums) == 2:
        raise ConfigError(f"--control {spec!r}: start/end need a scale first (MODEL:IMG:scale:start:end).")
    scale = nums[0] if nums else 1.0
    start, end = (nums[1], nums[2]) if len(nums) == 3 else (0.0, 1.0)
    return ControlSpec(parts[0], ":".join(parts[1:]), scale, start, end)


def condition_image(kind: str, path: str, size: tuple[int, int], ready_map: bool) -> Image.Image:
    """The condition image for ``kind``: extracted from the image at ``path`` (resized to ``size`` = (w, h)) or,
    with ``ready_map``, the file itself."""
    from tailor.conditions import extract
    from tailor.core.images import load_image

    img = load_image(path)  # InputError naming the file when it is not an image
    if ready_map:
        return img
    if img.size != size:
        img = img.resize(size, Image.BICUBIC)
    return Image.fromarray(extract(kind, np.asarray(img)))


def attach_controls(pipe, specs: list[str] | None, control_map: bool, width: int | None, height: int | None) -> None:
    """Load every ``--control`` model and attach it to ``pipe`` with its condition image."""
    import tailor

    size = pipe.components.default_size
    wh = (width or size, height or size)
    for raw in specs or []:
        spec = parse_control(raw)
        method = tailor.load(spec.model)
        kind = getattr(method.config, "condition", None)
        if kind is None:
            raise ConfigError(
                f"--control {spec.model} is a {method.name} file, not a control model (ControlNet or "
                f"T2I-Adapter); pass it with --apply instead."
            )
        image = condition_image(kind, spec.image, wh, control_map)
        pipe.attach(method, weight=spec.scale, start=spec.start, end=spec.end, image=image)
