"""``torchvision.transforms`` subset for diffusers' example scripts (see ``benchmarks/shims/torchvision``)."""

from __future__ import annotations

import torch

from . import functional
from .functional import InterpolationMode

__all__ = [
    "CenterCrop",
    "Compose",
    "InterpolationMode",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "functional",
]


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, antialias=True):
        self.size, self.interpolation = size, interpolation or InterpolationMode.BILINEAR

    def __call__(self, img):
        return functional.resize(img, self.size, self.interpolation)


class CenterCrop:
    def __init__(self, size):
        self.size = functional.pair(size)

    def __call__(self, img):
        return functional.center_crop(img, self.size)


class RandomCrop:
    def __init__(self, size):
        self.size = functional.pair(size)

    @staticmethod
    def get_params(img, output_size):
        w, h = img.size
        th, tw = output_size
        i = int(torch.randint(0, h - th + 1, size=(1,)).item())
        j = int(torch.randint(0, w - tw + 1, size=(1,)).item())
        return i, j, th, tw

    def __call__(self, img):
        return functional.crop(img, *self.get_params(img, self.size))


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return functional.hflip(img) if torch.rand(1).item() < self.p else img


class ToTensor:
    def __call__(self, img):
        return functional.to_tensor(img)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        return functional.normalize(tensor, self.mean, self.std)
