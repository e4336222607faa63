"""Documented bounds of the numbers a user passes, beyond what one config can check on its own.

Generation size (:func:`check_generation_size`): width and height are multiples of the base's VAE factor (the
pipeline checks that) and their product is at most :func:`max_pixels`: 16 times the base's default pixel count
(4 x its default side each way), lowered to what free memory holds at a conservative estimate of the UNet's
activations per latent position. ``tailor generate --allow-large`` lifts the limit: memory and time then grow with
the pixel count (self-attention's, quadratically).
"""

from __future__ import annotations

import os

from tailor.errors import ConfigError

#: the size limit in units of the base's default pixel count (4 x the default side each way)
SIZE_FACTOR = 16
#: activations kept per latent position and UNet channel (two CFG branches, float32, ~16 live tensors)
BYTES_PER_CHANNEL = 2 * 4 * 16


def free_memory(device: str = "cpu") -> int | None:
    """Bytes of free memory on ``device`` (None when unknown)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def max_pixels(components) -> int:
    """The largest ``width * height`` :func:`check_generation_size` allows for ``components``."""
    limit = SIZE_FACTOR * components.default_size**2
    free = free_memory(str(getattr(components, "device", "cpu")))
    channels = sum(components.unet.config.block_out_channels)
    if free:
        per_pixel = BYTES_PER_CHANNEL * channels / components.vae_scale_factor**2
        limit = min(limit, int(free / 2 / per_pixel))
    return limit


def check_generation_size(width: int, height: int, components, allow_large: bool = False) -> None:
    """Refuse a size above :func:`max_pixels` unless ``allow_large``."""
    if allow_large:
        return
    limit = max_pixels(components)
    if width * height > limit:
        side = int(limit**0.5) // components.vae_scale_factor * components.vae_scale_factor
        raise ConfigError(
            f"--width x --height {width}x{height} is above this base's limit of {limit} pixels (e.g. {side}x{side}); "
            f"pick a smaller size, or pass --allow-large (memory and time grow with the pixel count)."
        )
