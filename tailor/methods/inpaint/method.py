"""Inpainting training (Rombach et al. 2022, SD-inpainting): turn a base into a 9-channel inpainting base.

The UNet's ``conv_in`` gets ``latent_channels + 1`` more input channels (zero-initialised, existing weights and bias
kept; :func:`tailor.core.input_channels.widen_conv_in`), fed with the mask at latent size and the latents of the
masked image (``image * (mask < 0.5)``, the VAE posterior mean), diffusers' inpainting layout. A base that already
is an inpainting UNet keeps its ``conv_in`` (continued training). The weights that train are those of the
registered ``finetune`` method (the whole UNet by default, as SD-inpainting), created through the registry.

Training masks come from :mod:`.masks` (seeded per sample position). At sampling the patched base *is* an
inpainting base: the pipeline supplies mask and masked image itself (``--mask``; without one it repaints
everything), so the method adds nothing per step then. Files: ``inpaint.safetensors`` (the UNet, tailor metadata)
and ``pipeline/``, a diffusers ``StableDiffusionInpaintPipeline`` folder (usable as ``--base``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.conditioning import StepExtras, StepState
from tailor.core.input_channels import restore_conv_in, unet_in_channels, widen_conv_in
from tailor.core.latents import scale_latents
from tailor.core.method import ComposedMethod, get_spec
from tailor.core.training.noise import generator
from tailor.errors import IncompatibleError
from tailor.methods.inpaint.config import InpaintConfig
from tailor.methods.inpaint.masks import random_mask

STREAM_MASK = 21  # random stream of the training masks (see core.training.noise)


class InpaintMethod(ComposedMethod):
    """A 4-channel base made (or a 9-channel one trained further as) a 9-channel inpainting base."""

    name = "inpaint"
    config_cls = InpaintConfig
    default_lr: ClassVar[float] = 1e-4  # the tiny world model, like finetune; real SD bases want ~1e-5

    def __init__(self, config: InpaintConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.inner = get_spec("finetune").method(unet_params=self.config.unet_params)
        self._replaced_conv: nn.Conv2d | None = None
        self._seed = 0

    # ------------------------------------------------------------------ attach / detach
    def patch(self, components) -> None:
        if self.components is not None and self.components is not components:
            raise RuntimeError("inpaint is already attached to another base; call unpatch() first.")
        latent = int(components.vae.config.latent_channels)
        have = unet_in_channels(components.unet)
        if have == latent:
            self._replaced_conv = widen_conv_in(components.unet, latent + 1)
        elif have != 2 * latent + 1:
            raise IncompatibleError(
                f"inpaint needs a base whose UNet takes {latent} (plain) or {2 * latent + 1} (inpainting) input "
                f"channels; this one takes {have} — use a plain or inpainting Stable Diffusion base."
            )
        self.components = components
        try:
            self.inner.patch(components)
        except Exception:
            self.unpatch()
            raise
        components.unet.conv_in.requires_grad_(True)  # the new channels always train

    def unpatch(self) -> None:
        if self.inner.components is not None:
            self.inner.unpatch()
        if self._replaced_conv is not None and self.components is not None:
            restore_conv_in(self.components.unet, self._replaced_conv)
        self._replaced_conv = None
        self.components = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.inner.trainable_parameters()

    # ------------------------------------------------------------------ data
    def wrap_dataset(self, dataset, config):
        self._seed = int(config.seed)
        return dataset

    def expand_batch(self, batch, keys, positions):
        """Trainer hook: each item gets its random mask (``inpaint_mask``, 1xHxW, white = repaint)."""
        size = int(batch["pixel_values"].shape[-1])
        cfg = self.config
        masks = [
            random_mask(
                generator(self._seed, STREAM_MASK, p), size, cfg.mask_kinds, cfg.full_mask_prob, cfg.max_shapes
            )
            for p in positions
        ]
        return {**batch, "inpaint_mask": torch.stack(masks)}, keys, positions

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        """Training: the mask at latent size and the masked image's latents as the UNet's extra input channels
        (sampling: the pipeline supplies them, the patched base being an inpainting base)."""
        if not state.training:
            return None
        c = self.components
        pixels, mask = state.inputs["pixel_values"], state.inputs["inpaint_mask"]
        mask = mask.to(pixels.device, pixels.dtype)
        with torch.no_grad():
            masked = (pixels * (mask < 0.5)).to(c.vae.dtype)
            latents = scale_latents(c.vae.config, c.vae.encode(masked).latent_dist.mean)
        small = F.interpolate(mask, size=state.latents.shape[-2:])
        return StepExtras(input_channels=torch.cat([small, latents.to(small.dtype)], dim=1))

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "in_channels": unet_in_channels(self.components.unet) if self.components else 9}

    def save(self, out_dir: str | Path) -> Path:
        """``inpaint.safetensors`` plus ``pipeline/`` (a diffusers ``StableDiffusionInpaintPipeline`` folder)."""
        path = super().save(out_dir)
        if self.components is not None:
            self.components.save_pipeline(Path(out_dir) / "pipeline")
        return path
