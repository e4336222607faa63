"""Image-to-image (SDEdit, Meng et al. 2022) and inpainting inside the one denoising loop.

:class:`ImageStart` holds what a run starting from an image needs, prepared as diffusers'
``StableDiffusionImg2ImgPipeline`` / ``StableDiffusionInpaintPipeline`` prepare it (same processors, same order of
random draws, so the pipeline reproduces them to 1e-5):

* ``strength`` S in (0, 1] keeps the last ``int(steps * S)`` timesteps; the start latents are the VAE latents of the
  init image noised to the first kept timestep (strength 1 with a mask: pure noise, diffusers' inpainting default);
* a mask (white = repaint; binarised at 0.5) with a **9-channel inpainting UNet** (diffusers' layout: noisy latents 4
  + mask 1 + masked-image latents 4) feeds the mask at latent size and the latents of ``image * (mask < 0.5)`` as
  the base's extra input channels at every UNet call (:mod:`tailor.core.input_channels`);
* a mask with a **4-channel UNet** blends latents after every step: outside the mask the init image's latents noised
  to the next timestep, inside the sampler's (diffusers' inpainting pipeline with a 4-channel UNet);
* a 9-channel base without a mask repaints everything (mask all white, masked image empty): plain text-to-image.

With several images per call tailor VAE-encodes the init image once per image with that image's generator (image
``i`` stays reproducible alone with seed ``seed + i``), as the img2img pipeline does; diffusers' inpainting pipeline
encodes it once with the first generator, so the two agree for one image per call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tailor.core.input_channels import unet_in_channels
from tailor.core.latents import scale_latents
from tailor.errors import ConfigError, InputError

log = logging.getLogger("tailor")

ImageLike = Image.Image | np.ndarray | str | Path


def _name(value: Any, what: str) -> str:
    return f"{what} {value}" if isinstance(value, str | Path) else what


def _open(value: ImageLike, what: str) -> Image.Image:
    from tailor.core.images import load_image

    if isinstance(value, str | Path) and what == "mask":  # a grey-level file is what a mask is: no conversion note
        path = Path(value)
        if not path.is_file():
            raise InputError(f"mask {path} does not exist; check the path.")
        try:
            img = Image.open(path)
            img.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(f"mask {path} is not a readable image ({e.__class__.__name__}); re-save it.") from e
        return img
    if isinstance(value, str | Path):
        return load_image(value)
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            value = (np.clip(value, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(value)
    if isinstance(value, Image.Image):
        return value
    raise ConfigError(f"{what} must be an image file, a PIL image or a uint8 array; got {type(value).__name__}.")


def _sized(img: Image.Image, size: tuple[int, int], label: str) -> Image.Image:
    """``img``, whose resizing to the output size (diffusers' processors resize) is said once."""
    if img.size != size:
        log.warning(
            "%s is %dx%d; resized to the output size %dx%d (pass --width/--height to change the output size)",
            label,
            *img.size,
            *size,
        )
    return img


def base_layout(unet, latent_channels: int, method_channels: int) -> int:
    """The base's own extra input channels: 0 (a plain UNet) or ``latent_channels + 1`` (an inpainting UNet)."""
    extra = unet_in_channels(unet) - latent_channels - method_channels
    if extra not in (0, latent_channels + 1):
        raise ConfigError(
            f"the UNet takes {unet_in_channels(unet)} input channels; tailor samples plain ({latent_channels}) and "
            f"inpainting ({2 * latent_channels + 1}) UNets, plus what attached methods add ({method_channels})."
        )
    return extra


def check_strength(strength: float, steps: int) -> None:
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength must lie in (0, 1] (how much of the init image is repainted); got {strength}.")
    if int(steps * strength) < 1:
        raise ConfigError(
            f"strength {strength} of {steps} steps leaves no sampling step (int(steps * strength) = 0); raise --steps "
            f"or --strength."
        )


@dataclass
class ImageStart:
    """An init image (``1x3xHxW`` in [-1, 1]), an optional binarised mask (``1x1xHxW``) and the strength."""

    image: torch.Tensor | None
    mask: torch.Tensor | None
    strength: float
    inpaint_unet: bool  # the base takes mask + masked-image channels

    @classmethod
    def prepare(
        cls,
        components,
        init_image: ImageLike | None,
        mask: ImageLike | None,
        strength: float | None,
        width: int,
        height: int,
        steps: int,
        base_extra: int,
    ) -> ImageStart | None:
        """The start of a run, or None for plain text-to-image; one-sentence errors for unusable inputs."""
        from diffusers.image_processor import VaeImageProcessor

        inpaint_unet = base_extra > 0
        if init_image is None:
            if mask is not None:
                raise ConfigError("--mask needs the image to inpaint; pass --init-image IMG with it.")
            if strength is not None:
                raise ConfigError(
                    "--strength needs an init image; pass --init-image IMG with it (or drop --strength)."
                )
            if not inpaint_unet:
                return None
        strength = (1.0 if mask is not None or init_image is None else 0.8) if strength is None else float(strength)
        check_strength(strength, steps)
        f = components.vae_scale_factor
        image = None
        if init_image is not None:
            label = _name(init_image, "init image")
            img = _sized(_open(init_image, "init_image").convert("RGB"), (width, height), label)
            image = VaeImageProcessor(vae_scale_factor=f).preprocess(img, height=height, width=width)
        tensor_mask = None
        if mask is not None:
            label = _name(mask, "mask")
            m = _sized(_open(mask, "mask").convert("L"), (width, height), label)
            proc = VaeImageProcessor(
                vae_scale_factor=f, do_normalize=False, do_binarize=True, do_convert_grayscale=True
            )
            tensor_mask = proc.preprocess(m, height=height, width=width)
            if not bool((tensor_mask >= 0.5).any()):
                raise InputError(f"{label} is all black: nothing to repaint; paint the region to repaint white.")
        elif inpaint_unet:  # an inpainting base asked for text-to-image or img2img: repaint everything
            tensor_mask = torch.ones(1, 1, height, width)
        if image is None:
            image = torch.zeros(1, 3, height, width)
        return cls(image, tensor_mask, strength, inpaint_unet)

    # ------------------------------------------------------------------ the schedule
    def timesteps(self, scheduler, steps: int) -> torch.Tensor:
        """The kept timesteps (diffusers' ``get_timesteps``): the last ``int(steps * strength)``."""
        keep = min(int(steps * self.strength), steps)
        start = max(steps - keep, 0)
        order = getattr(scheduler, "order", 1)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * order)
        return scheduler.timesteps[start * order :]

    # ------------------------------------------------------------------ latents
    def _encode(self, components, pixels: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        """One VAE posterior sample per image, each drawn from that image's generator (diffusers'
        ``retrieve_latents``), scaled to diffusion latents."""
        vae = components.vae
        pixels = pixels.to(components.device, vae.dtype)
        out = [vae.encode(pixels).latent_dist.sample(g) for g in gens]
        return scale_latents(vae.config, torch.cat(out)).to(components.dtype)

    def initial_latents(self, components, scheduler, timesteps, gens, shape) -> torch.Tensor:
        """The start latents, drawing from ``gens`` in diffusers' order (image, noise, masked image)."""
        dtype, device = components.dtype, components.device
        full = self.strength == 1.0 and self.mask is not None
        self.image_latents = None
        if not (full and self.inpaint_unet):
            self.image_latents = self._encode(components, self.image, gens)
        self.noise = torch.cat([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(device)
        if full:
            latents = self.noise * scheduler.init_noise_sigma
        else:
            start = timesteps[:1].repeat(len(gens))
            latents = scheduler.add_noise(self.image_latents, self.noise, start)
        self.mask_latents = self.masked_latents = None
        if self.mask is not None:
            h, w = shape[-2:]
            self.mask_latents = F.interpolate(self.mask, size=(h, w)).to(device, dtype).repeat(len(gens), 1, 1, 1)
            masked = self.image * (self.mask < 0.5)
            self.masked_latents = self._encode(components, masked, gens)
        return latents

    # ------------------------------------------------------------------ per step
    def base_channels(self) -> torch.Tensor | None:
        """An inpainting UNet's own extra channels ``[mask, masked-image latents]`` per image (the caller repeats
        them over the CFG halves), or None."""
        if not self.inpaint_unet:
            return None
        return torch.cat([self.mask_latents, self.masked_latents], dim=1)

    def blend(self, latents: torch.Tensor, scheduler, timesteps, i: int) -> torch.Tensor:
        """After step ``i``, with a mask on a 4-channel UNet: keep the init image (noised to the next timestep)
        outside the mask."""
        if self.inpaint_unet or self.mask is None:
            return latents
        proper = self.image_latents
        if i < len(timesteps) - 1:
            proper = scheduler.add_noise(proper, self.noise, torch.tensor([timesteps[i + 1]]))
        return (1 - self.mask_latents) * proper + self.mask_latents * latents

    # ------------------------------------------------------------------ after decoding
    def overlay(self, images: np.ndarray, blur: int | None) -> np.ndarray:
        """``images`` (NHWC in [0, 1]) with the init image pasted back outside the mask, the mask's edge blurred by
        ``blur`` pixels (a Gaussian of that radius; A1111's mask blur + overlay); unchanged when ``blur`` is None."""
        if blur is None or self.mask is None:
            return images
        from PIL import ImageFilter

        mask = Image.fromarray((self.mask[0, 0].cpu().numpy() * 255).round().astype(np.uint8), "L")
        if blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(blur))
        alpha = (np.asarray(mask, dtype=np.float32) / 255.0)[None, :, :, None]
        init = (self.image[0].permute(1, 2, 0).cpu().float().numpy() / 2 + 0.5).clip(0, 1)[None]
        return (alpha * images + (1 - alpha) * init).astype(images.dtype)
