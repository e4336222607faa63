"""IP-Adapter pieces (Ye et al. 2023): the image projections, image inputs for the CLIP image encoder, the embedding
cache and the training drop draws.

The projections are diffusers' own modules, so diffusers' loader builds the same thing from our files:
``ImageProjection`` (Linear(d_img -> T * cad), reshape to T tokens, LayerNorm) on the encoder's projected image
embedding, and for Plus ``IPAdapterPlusImageProjection`` (Perceiver resampler: T learned latents of its own width,
4 layers, dim_head 64, heads = width / 64, feed-forward x4; ``tailor.core.resampler``) on the encoder's penultimate
hidden states.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tailor.core.images import load_image
from tailor.core.resampler import make_projection  # noqa: F401 - re-exported (moved to core)
from tailor.errors import InputError

STREAM_IP_DROP = 7  # random stream of the text / image drop draws (distinct from the trainer's streams)
NO_DROP, DROP_IMAGE, DROP_TEXT, DROP_BOTH = 0, 1, 2, 3


def encoder_width(encoder, plus: bool) -> int:
    """Width of what the projection reads: the projected embedding, or (Plus) the hidden states."""
    return int(encoder.config.hidden_size if plus else encoder.config.projection_dim)


# --------------------------------------------------------------------- image inputs
def as_images(value: Any) -> list[Image.Image]:
    """``ip_image`` (a path, PIL image, HWC array, CHW tensor in [-1, 1], or a list of those) -> RGB PIL images."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise InputError("ip_image is an empty list; pass at least one reference image.")
    out = []
    for item in items:
        if isinstance(item, str | Path):
            out.append(load_image(item))
        elif isinstance(item, Image.Image):
            out.append(item.convert("RGB"))
        elif isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[-1] in (1, 3, 4):
            arr = item if item.dtype == np.uint8 else (np.clip(item, 0, 1) * 255).round().astype(np.uint8)
            out.append(Image.fromarray(arr[..., :3] if arr.shape[-1] != 1 else arr[..., 0]).convert("RGB"))
        elif isinstance(item, torch.Tensor) and item.ndim == 3 and item.shape[0] == 3:
            arr = ((item.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            out.append(Image.fromarray(arr))
        else:
            raise InputError(
                f"ip_image must be an image file, a PIL image, an HxWx3 array or a 3xHxW tensor in "
                f"[-1, 1]; got {type(item).__name__}."
            )
    return out


def image_key(img: Image.Image) -> str:
    return hashlib.sha1(img.tobytes() + f"{img.size}{img.mode}".encode()).hexdigest()


def pixels_for_encoder(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """Training images in [-1, 1] (B, 3, H, W) -> the encoder's normalised input (resize bicubic + CLIP mean/std)."""
    size = processor.crop_size
    h, w = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
    x = (pixel_values.float() + 1) / 2
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(processor.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_pixels(encoder, pixels: torch.Tensor, plus: bool) -> torch.Tensor:
    """What the projection reads (diffusers' ``encode_image``): image_embeds, or hidden_states[-2] for Plus."""
    pixels = pixels.to(device=encoder.device, dtype=encoder.dtype)
    if plus:
        return encoder(pixels, output_hidden_states=True).hidden_states[-2]
    return encoder(pixels).image_embeds


class EmbeddingCache:
    """(cond, uncond) encoder outputs per image hash, so repeated generations skip the image encoder."""

    def __init__(self, size: int = 32):
        self.size = size
        self.items: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def get(self, key: str):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)


# --------------------------------------------------------------------- training drops
def drop_code(seed: int, position: int, p_text: float, p_image: float, p_both: float) -> int:
    """One uniform draw per sample, as the official training script: image, else text, else both, else keep."""
    from tailor.core.training.noise import generator  # lazily: the training package pulls in accelerate

    u = float(torch.rand((), generator=generator(seed, STREAM_IP_DROP, position)))
    if u < p_image:
        return DROP_IMAGE
    if u < p_image + p_text:
        return DROP_TEXT
    if u < p_image + p_text + p_both:
        return DROP_BOTH
    return NO_DROP
