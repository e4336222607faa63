"""Shared plumbing of spatial-control methods (ControlNet, Zhang et al. 2023; T2I-Adapter, Mou et al. 2023; ...).

- condition images: accept a path, PIL image, uint8 array or a [0, 1] tensor and prepare them as diffusers'
  ControlNet / adapter pipelines do (``VaeImageProcessor`` without normalisation: float 3xHxW in [0, 1]);
- the condition batch for one UNet call: repeated over the images and, with classifier-free guidance, over both
  halves (or only the conditional half in ControlNet's guess mode);
- guess-mode residual scales (diffusers: ``torch.logspace(-1, 0, n)`` over the n residuals);
- the hint-encoder widths for a VAE factor, and the empty-prompt dropout of control training (seeded per sample
  position, so a resumed run drops the same captions).
Nothing here names a method.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tailor.core.conditioning import StepState
from tailor.core.surface import GenerateInput, Input
from tailor.errors import ConfigError, InputError

#: how ``tailor generate`` takes every spatial-control method: ``--control MODEL:IMG[:scale[:start:end]]``
CONTROL_INPUT = GenerateInput(
    "--control",
    "ControlNet / T2I-Adapter / ControlNeXt model (a path or a shipped world name: canny, seg, t2i-canny, "
    "controlnext-canny) and the image its condition is extracted from, resized to the output size (MODEL=IMG works "
    "too); repeatable.",
    input=Input("image", "condition", ready_flag="--control-map", help="--control images are ready condition maps."),
    ref_sep=":",
)

#: ControlNet's hint encoder widths for a VAE factor of 8 (three stride-2 convs)
HINT_CHANNELS = (16, 32, 96, 256)
STREAM_EMPTY_PROMPT = 11  # random stream of the empty-prompt draws (see core.training.noise)


def hint_channels(vae_factor: int, channels: tuple[int, ...] = HINT_CHANNELS) -> tuple[int, ...]:
    """The first ``log2(factor) + 1`` hint widths, so the hint encoder downsamples exactly to the latent size."""
    n = int(round(math.log2(vae_factor))) + 1
    if 2 ** (n - 1) != vae_factor or n > len(channels):
        raise ConfigError(
            f"the hint encoder supports VAE factors 1..{2 ** (len(channels) - 1)} (powers of 2); got {vae_factor}."
        )
    return tuple(channels[:n])


#: the parts of a UNet diffusers' ``ControlNetModel.from_unet`` copies into the ControlNet
UNET_PARTS = ("conv_in", "time_proj", "time_embedding", "class_embedding", "add_embedding", "down_blocks", "mid_block")


def controlnet_from_unet(unet, latent_channels: int | None = None, **kwargs):
    """diffusers' ``ControlNetModel.from_unet`` for the UNet as earlier methods left it (``kwargs`` go to it: hint
    widths, conditioning channels):

    - a LoRA attached before (peft layers ``<name>.base_layer`` + ``lora_A/B``, e.g. ``--lora`` before
      ``--instantid``): the base layers' weights are copied, not the wrappers';
    - a ``conv_in`` widened by an input-channel method (inpainting, IC-Light, try-on): the ControlNet reads the noisy
      latents alone, as in diffusers' ControlNet-inpaint pipeline, so its ``conv_in`` takes ``latent_channels`` and
      copies the weights of those input channels."""
    from diffusers import ControlNetModel

    state = unet.state_dict()
    wrapped = any(".base_layer." in k for k in state)
    widened = latent_channels is not None and int(unet.config.in_channels) != latent_channels
    if not (wrapped or widened):
        return ControlNetModel.from_unet(unet, **kwargs)
    net = ControlNetModel.from_unet(unet, load_weights_from_unet=False, **kwargs)
    if widened:
        old = net.conv_in
        net.conv_in = torch.nn.Conv2d(latent_channels, old.out_channels, old.kernel_size, padding=old.padding)
        net.register_to_config(in_channels=latent_channels)
    base = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    own = net.state_dict()
    copied = {}
    for k, v in own.items():
        if k.split(".")[0] in UNET_PARTS and k in base:
            w = base[k][:, :latent_channels] if widened and k == "conv_in.weight" else base[k]
            if w.shape == v.shape:
                copied[k] = w
    net.load_state_dict(copied, strict=False)
    return net


def load_condition(source: Any, what: str = "control image") -> Any:
    """A path is opened (InputError naming it when it is not an image); other inputs pass through checked."""
    if isinstance(source, (str, Path)):
        from tailor.core.images import load_image

        return load_image(source)
    if isinstance(source, (Image.Image, torch.Tensor)):
        return source
    if isinstance(source, np.ndarray) and source.ndim in (2, 3):
        return Image.fromarray(source if source.dtype == np.uint8 else np.clip(source * 255, 0, 255).astype(np.uint8))
    raise InputError(
        f"{what} must be an image file, a PIL image, an HxWx3 array or a tensor; got {type(source).__name__}."
    )


def condition_tensor(image: Any, height: int, width: int, vae_factor: int) -> torch.Tensor:
    """Float Bx3xHxW in [0, 1], resized like diffusers' ControlNet pipeline (``VaeImageProcessor.preprocess``)."""
    from diffusers.image_processor import VaeImageProcessor

    image = load_condition(image)
    if isinstance(image, torch.Tensor):
        image = image[None] if image.ndim == 3 else image
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"a control tensor must be 3xHxW or Bx3xHxW; got shape {tuple(image.shape)}.")
    proc = VaeImageProcessor(vae_scale_factor=vae_factor, do_convert_rgb=True, do_normalize=False)
    return proc.preprocess(image, height=height, width=width).to(dtype=torch.float32)


def control_batch(image: torch.Tensor, state: StepState, cond_only: bool = False) -> torch.Tensor:
    """The condition for one UNet call: repeated to the images, then over both CFG halves unless ``cond_only``."""
    n = state.cond.batch_size
    if image.shape[0] == 1:
        image = image.repeat_interleave(n, dim=0)
    elif image.shape[0] != n:
        if n % image.shape[0]:
            raise InputError(f"{image.shape[0]} control images cannot be spread over {n} images; pass 1 or {n}.")
        image = image.repeat_interleave(n // image.shape[0], dim=0)
    image = image.to(device=state.latents.device, dtype=state.latents.dtype)
    return torch.cat([image, image]) if state.cond.cfg and not cond_only else image


def guess_mode_scales(n: int, device=None) -> torch.Tensor:
    """diffusers' guess-mode weights of the n residuals (shallow 0.1 ... deepest/mid 1.0)."""
    return torch.logspace(-1, 0, n, device=device)


def pad_uncond(residuals: list[torch.Tensor]) -> list[torch.Tensor]:
    """Guess mode with CFG: the unconditional half gets no control (zeros), as in diffusers."""
    return [torch.cat([torch.zeros_like(r), r]) for r in residuals]


def drop_captions(batch: dict[str, Any], positions: list[int], seed: int, rate: float) -> dict[str, Any]:
    """Replace each caption by "" with probability ``rate``, drawn from ``(seed, stream, sample position)``."""
    if rate <= 0 or "caption" not in batch:
        return batch
    from tailor.core.training.noise import generator  # lazily: the training package pulls in accelerate

    drop = [bool(torch.rand((), generator=generator(seed, STREAM_EMPTY_PROMPT, p)) < rate) for p in positions]
    return {**batch, "caption": ["" if d else c for d, c in zip(drop, batch["caption"])]}


def swap_captions(
    batch: dict[str, Any], positions: list[int], seed: int, stream: int, rate: float, key: str
) -> dict[str, Any]:
    """Replace each non-empty caption by ``batch[key]``'s (e.g. a class-only caption) with probability ``rate``, drawn
    from ``(seed, stream, sample position)``; a batch without ``key`` or captions is returned as is."""
    other = batch.get(key)
    if rate <= 0 or other is None or "caption" not in batch:
        return batch
    from tailor.core.training.noise import generator  # lazily: the training package pulls in accelerate

    swap = [bool(torch.rand((), generator=generator(seed, stream, p)) < rate) for p in positions]
    return {**batch, "caption": [q if s and c else c for s, c, q in zip(swap, batch["caption"], other)]}


def to_uint8_image(pixel_values: torch.Tensor) -> np.ndarray:
    """A training tensor 3xHxW in [-1, 1] back to uint8 HxWx3."""
    x = (pixel_values.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().byte().permute(1, 2, 0).numpy()


def example_control_inputs(components) -> dict[str, Any]:
    """A seeded random control image of the base's size: the conformance tests' inputs for control methods."""
    size = components.default_size
    return {"image": torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))}
