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
from tailor.core.unet_delta import UNetDelta, dense_offsets, is_compact
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.inpaint.config import InpaintConfig
from tailor.methods.inpaint.masks import random_mask

STREAM_MASK = 21  # random stream of the training masks (see core.training.noise)
DELTA = "delta."  # file keys of the compact UNet delta (unet_rank > 0)


class InpaintMethod(ComposedMethod):
    """A 4-channel base made (or a 9-channel one trained further as) a 9-channel inpainting base."""

    name = "inpaint"
    widens_input = True  # its conv_in takes the inputs' extra channels
    config_cls = InpaintConfig
    default_lr: ClassVar[float] = 1e-4  # the tiny world model, like finetune; real SD bases want ~1e-5

    def __init__(self, config: InpaintConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.inner = get_spec("finetune").method(unet_params=self.config.unet_params)
        self._replaced_conv: nn.Conv2d | None = None
        self._seed = 0
        rank = self.config.unet_rank  # > 0: the compact form (tailor.core.unet_delta) instead of the inner finetune
        self._delta = UNetDelta(rank, name="inpaint_delta") if rank else None
        self._merged: dict[str, torch.Tensor] = {}  # base values of the weights base + delta replaced (sampling)

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
        if self._delta is not None:
            try:
                self._merge()
            except Exception:
                self.unpatch()
                raise
            return
        try:
            self.inner.patch(components)
        except Exception:
            self.unpatch()
            raise
        components.unet.conv_in.requires_grad_(True)  # the new channels always train

    # ------------------------------------------------------------------ the compact form (unet_rank > 0)
    def _merge(self) -> None:
        """Sampling: the UNet's weights become base + the delta held (plain modules, no LoRA layers)."""
        state = self._delta.state_dict()
        if not state or self._merged:
            return
        own = self.components.unet.state_dict()
        offsets = dense_offsets(state)
        source = self.source_file or "the inpaint delta"
        for k, v in offsets.items():
            if k not in own or own[k].shape != v.shape:
                got = tuple(own[k].shape) if k in own else "no such key"
                raise IncompatibleError(
                    f"{source} does not fit this base ({k}: {tuple(v.shape)} vs {got}); use weights made for it."
                )
        with torch.no_grad():
            for k, v in offsets.items():
                self._merged[k] = own[k].detach().to("cpu", copy=True)
                own[k].add_(v.to(own[k]))

    def _unmerge(self) -> None:
        own = self.components.unet.state_dict()
        with torch.no_grad():
            for k, v in self._merged.items():
                own[k].copy_(v.to(own[k]))
        self._merged = {}

    def modules(self) -> list[nn.Module]:
        if self._delta is None:
            return self.inner.modules()
        return [self.components.unet] if self.components is not None else []

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self._delta is None:
            return super().state_dict()
        return {f"{self.name}.{DELTA}{k}": v for k, v in self._delta.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self._delta is None:
            return super().load_state_dict(state)
        prefix = f"{self.name}.{DELTA}"
        compact = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not is_compact(compact) or len(compact) != len(state):
            raise FormatError(
                f"{self.source_file or 'the inpaint weights'} hold no compact UNet delta ({prefix}*) but "
                f"unet_rank={self.config.unet_rank}; the file is damaged or made with unet_rank=0."
            )
        self._delta.load_state_dict(compact)
        if self.components is not None and not self._delta.training:
            self._unmerge()
            self._merge()

    def unpatch(self) -> None:
        if self._delta is not None and self.components is not None:
            self._delta.stop()
            self._unmerge()
        if self.inner.components is not None:
            self.inner.unpatch()
        if self._replaced_conv is not None and self.components is not None:
            restore_conv_in(self.components.unet, self._replaced_conv)
        self._replaced_conv = None
        self.components = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The inner finetune's; with ``unet_rank`` the full tensors and the LoRA (injected here over the base, which
        only the trainer asks for)."""
        if self._delta is None:
            return self.inner.trainable_parameters()
        if not self._delta.training:
            self._unmerge()
            self._delta.start(self.components)
        return self._delta.parameters()

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
            if self._delta is not None and self._delta.training:  # the folder holds the full merged UNet
                self._delta.stop()
                self._merge()
            self.components.save_pipeline(Path(out_dir) / "pipeline")
        return path
