"""Extra UNet input channels: ``conv_in`` widened, extra latents concatenated to the noisy latents at every call.

Several methods condition the UNet by concatenating latents to its input rather than through attention or residuals:
Stable Diffusion inpainting (Rombach et al. 2022; diffusers' layout ``[noisy 4 | mask 1 | masked-image latents 4]``,
9 channels), IC-Light (Zhang, Rao, Agrawala 2025; ``[noisy | foreground (| background)]``), try-on models. This
module is their shared core:

* :func:`widen_conv_in` gives ``conv_in`` more input channels, appended after the existing ones: the new weights are
  zero (the widened UNet computes exactly what it did until training moves them), the existing weights and the
  bias are kept; ``unet.config.in_channels`` follows, so ``save_pretrained`` writes a folder diffusers reloads.
  :func:`restore_conv_in` undoes it.
* a method that widens ``conv_in`` sets ``Method.input_channels`` and returns the extra latents from ``step_kwargs``
  as :attr:`StepExtras.input_channels <tailor.core.conditioning.StepExtras.input_channels>`, one row per image
  (:func:`per_unet_row` repeats them over both classifier-free-guidance halves: the unconditional row sees the same
  image latents, as in diffusers' inpainting pipeline) or one per UNet row. Outside its start/end window the
  pipeline feeds zeros instead (:func:`zero_channels`).
* :func:`with_channels` appends them to the UNet input: the base's own channels first (an inpainting base's mask and
  masked image, supplied by the pipeline), then each attached method's, in attachment order.
"""

from __future__ import annotations

import torch
from torch import nn

from tailor.core.conditioning import Conditioning
from tailor.errors import ConfigError


def unet_in_channels(unet) -> int:
    """The number of input channels the UNet's ``conv_in`` takes."""
    return int(unet.config.in_channels)


def widen_conv_in(unet, extra: int) -> nn.Conv2d:
    """Append ``extra`` zero-initialised input channels to ``unet.conv_in`` (weights and bias of the existing ones
    kept, same device, dtype and trainability); returns the replaced conv for :func:`restore_conv_in`."""
    if extra < 1:
        raise ValueError(f"widen_conv_in needs extra >= 1; got {extra}")
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    new.train(old.training)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return old


def restore_conv_in(unet, conv: nn.Conv2d) -> None:
    """Put back the ``conv_in`` that :func:`widen_conv_in` replaced."""
    unet.conv_in = conv
    unet.register_to_config(in_channels=conv.in_channels)


def per_unet_row(channels: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Per-image channels repeated over both CFG halves; a tensor already of the UNet batch passes as it is."""
    if cond.cfg and channels.shape[0] == cond.batch_size:
        return torch.cat([channels, channels])
    return channels


def zero_channels(latents: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` zero channels for the UNet batch ``latents`` (a method outside its start/end window)."""
    return latents.new_zeros((latents.shape[0], count, *latents.shape[2:]))


def with_channels(unet, latents: torch.Tensor, channels: torch.Tensor | None) -> torch.Tensor:
    """The UNet input: ``latents`` with ``channels`` appended, checked against what ``conv_in`` takes."""
    if channels is not None:
        if channels.shape[0] != latents.shape[0] or channels.shape[2:] != latents.shape[2:]:
            raise ValueError(
                f"extra input channels {tuple(channels.shape)} do not match the latents {tuple(latents.shape)}"
            )
        latents = torch.cat([latents, channels.to(latents.dtype)], dim=1)
    want = unet_in_channels(unet)
    if latents.shape[1] != want:
        raise ConfigError(
            f"the UNet takes {want} input channels but gets {latents.shape[1]} (latents plus the extra channels of "
            f"the base and the attached methods); a method that widens the UNet input needs a base of its original "
            f"width, and training other methods on an inpainting base is not supported."
        )
    return latents
