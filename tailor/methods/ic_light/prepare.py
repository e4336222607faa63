"""IC-Light's condition images, prepared as in the official demos.

* foreground: the object on a flat grey (127) background, blended by its alpha: ``127 + (rgb - 127) * alpha`` (the
  demo gets alpha from a matting model, BRIA RMBG; tailor takes it from the image's alpha channel, or from a mask
  image given beside it: ``--foreground-mask``, white = the object). A foreground with neither is refused: tailor has
  no matting model to find the object.
* background (fbc): the image itself.
* both resized to cover the output and centre-cropped (Lanczos), scaled by ``x / 127 - 1`` (so 127 is exactly 0),
  VAE-encoded with the posterior mode and scaled to diffusion latents.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tailor.core.images import image_input
from tailor.core.latents import scale_latents
from tailor.errors import InputError

log = logging.getLogger("tailor")

GREY = 127.0


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def cover_crop(img: Image.Image, width: int, height: int) -> np.ndarray:
    """Resize to cover ``width`` x ``height`` (Lanczos) and crop the centre (the demos' ``resize_and_center_crop``)."""
    scale = max(width / img.width, height / img.height)
    w, h = int(round(img.width * scale)), int(round(img.height * scale))
    img = img.resize((w, h), Image.LANCZOS)
    left, top = (w - width) / 2, (h - height) / 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def foreground_array(value: Any, width: int, height: int, mask: Any = None) -> np.ndarray:
    """The foreground on grey, ``height x width x 3`` uint8; alpha from ``mask`` (an image, white = the object) when
    given, else from the image's alpha channel."""
    img = image_input(value, "IC-Light foreground")
    name = f"foreground {value}" if isinstance(value, str | Path) else "foreground image"
    if mask is not None:
        m = image_input(mask, "IC-Light foreground mask").convert("L")
        if m.size != img.size:
            log.warning("IC-Light: the foreground mask is %dx%d, the foreground %dx%d: the mask was resized",
                        *m.size, *img.size)  # fmt: skip
            m = m.resize(img.size, Image.BILINEAR)
        alpha = np.asarray(m).astype(np.float32)[..., None] / 255.0
        rgb = np.asarray(img.convert("RGB")).astype(np.float32)
    elif _has_alpha(img):
        rgba = np.asarray(img.convert("RGBA")).astype(np.float32)
        alpha, rgb = rgba[..., 3:] / 255.0, rgba[..., :3]
    else:
        raise InputError(
            f"IC-Light {name} has no alpha channel and no mask was given, so the object cannot be found (tailor has "
            f"no matting model); give an RGBA image whose alpha is the object, or its mask with --foreground-mask."
        )
    if not (alpha > 0.5).any():
        raise InputError(f"IC-Light {name}'s mask is empty (no object); give a mask or alpha that covers the object.")
    img = Image.fromarray((GREY + (rgb - GREY) * alpha).clip(0, 255).astype(np.uint8))
    return cover_crop(img, width, height)


def background_array(value: Any, width: int, height: int) -> np.ndarray:
    return cover_crop(image_input(value, "IC-Light background").convert("RGB"), width, height)


def to_model_range(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 images -> ``Bx3xHxW`` with 127 -> 0 (the demos' ``x / 127 - 1``)."""
    return torch.from_numpy(np.stack(arrays)).float().div(127.0).sub(1.0).movedim(-1, 1)


@torch.no_grad()
def encode_mode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """VAE posterior mode, scaled to diffusion latents."""
    mode = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    return scale_latents(vae.config, mode)
