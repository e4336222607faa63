"""``torchvision.transforms.functional`` subset on PIL images (see ``benchmarks/shims/torchvision``)."""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
from PIL import Image


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.NEAREST_EXACT: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
    InterpolationMode.BOX: Image.BOX,
    InterpolationMode.HAMMING: Image.HAMMING,
    InterpolationMode.LANCZOS: Image.LANCZOS,
}


def pair(size) -> tuple[int, int]:
    """(height, width) of an int or a 1- / 2-sequence."""
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def resize(img: Image.Image, size, interpolation=InterpolationMode.BILINEAR) -> Image.Image:
    """An int resizes the shorter side to ``size`` (aspect kept); a pair is (height, width)."""
    w, h = img.size
    if isinstance(size, int) or len(list(size)) == 1:
        s = size if isinstance(size, int) else list(size)[0]
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    else:
        nh, nw = pair(size)
    if (nw, nh) == (w, h):
        return img
    return img.resize((nw, nh), _PIL[interpolation])


def crop(img: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    return img.crop((left, top, left + width, top + height))


def center_crop(img: Image.Image, output_size) -> Image.Image:
    th, tw = pair(output_size)
    w, h = img.size
    return crop(img, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0)), th, tw)


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 -> CHW float in [0, 1]."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=tensor.dtype).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype).reshape(-1, 1, 1)
    return (tensor - mean) / std
