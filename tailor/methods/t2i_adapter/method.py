"""T2I-Adapter (Mou et al. 2023): a small encoder of the condition image whose multi-scale features are added to the
frozen UNet's encoder, one feature map per down level (diffusers' ``down_intrablock_additional_residuals``).

The adapter is diffusers' ``T2IAdapter`` sized to the base: channels = the UNet's ``block_out_channels``,
``downscale_factor`` = the VAE factor (PixelUnshuffle), ``num_res_blocks`` per stage; ``full`` or ``light``
(c/4 bottleneck; light needs equal last two widths, as on SD1.5). The features do not depend on the timestep: the
UNet runs once per step and the adapter once per generation. Several adapters = several attachments; the pipeline
weights and sums their features (diffusers' ``MultiAdapter``). Training samples timesteps cubically,
``t = (1 - u^3) * T`` (the paper's "non-uniform time step sampling": structure is decided early, at large t).

Files: ``t2i_adapter.safetensors`` (keys ``t2i_adapter.<diffusers key>``; tailor metadata names the condition kind
and carries the adapter config) and ``t2i_adapter/`` (``save_pretrained``; ``T2IAdapter.from_pretrained`` loads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.conditions.method import ConditionedModelMethod
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.control import condition_tensor, control_batch
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import ARTIFACT_FORMAT
from tailor.core.model_method import diffusers_folder
from tailor.core.training.noise import cubic_timesteps
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.t2i_adapter.config import T2IAdapterConfig

_TYPES = {"full": "full_adapter", "light": "light_adapter"}
SDXL_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")


def adapter_config(unet_config, vae_factor: int, adapter_type: str, num_res_blocks: int) -> dict[str, Any]:
    """``T2IAdapter`` arguments sized to a base UNet."""
    chans = [int(c) for c in unet_config.block_out_channels]
    if tuple(getattr(unet_config, "down_block_types", ())) == SDXL_BLOCKS and adapter_type == "full":
        # SDXL adds the first feature after a downsampler and the last one in the mid block: diffusers' XL adapter
        return dict(
            in_channels=3,
            channels=[*chans, chans[-1]],
            num_res_blocks=num_res_blocks,
            downscale_factor=2 * vae_factor,
            adapter_type="full_adapter_xl",
        )
    if adapter_type == "light":
        if len(chans) < 2 or chans[-1] != chans[-2]:
            raise IncompatibleError(
                f"a light T2I-Adapter repeats the last width, so it needs equal last two UNet "
                f"widths (this base has {chans}); use adapter_type=full."
            )
        chans = chans[:-1]
    return dict(
        in_channels=3,
        channels=chans,
        num_res_blocks=num_res_blocks,
        downscale_factor=vae_factor,
        adapter_type=_TYPES[adapter_type],
    )


class T2IAdapterMethod(ConditionedModelMethod):
    """One T2I-Adapter; attach it with ``image=<condition image>`` (path, PIL, uint8 array or [0, 1] tensor)."""

    name = "t2i_adapter"
    config_cls = T2IAdapterConfig
    default_lr: ClassVar[float] = 1e-5  # the paper's learning rate
    model_attr = "adapter"
    label = "T2I-Adapter"
    diffusers_class = "T2IAdapter"
    adapter: nn.Module | None

    def __init__(self, config: T2IAdapterConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._cache: tuple | None = None

    def build(self, components) -> None:
        from diffusers import T2IAdapter

        unet, f = components.unet, components.vae_scale_factor
        want = adapter_config(unet.config, f, self.config.adapter_type, self.config.num_res_blocks)
        cfg = want
        if self.model_config is not None:
            cfg = {k: v for k, v in self.model_config.items() if not k.startswith("_")}
            for key in ("channels", "downscale_factor", "in_channels"):
                mine = list(cfg[key]) if isinstance(cfg.get(key), (list, tuple)) else cfg.get(key)
                base = list(want[key]) if isinstance(want[key], (list, tuple)) else want[key]
                if (
                    key in cfg
                    and mine != base
                    and not (key == "channels" and cfg.get("adapter_type") != want["adapter_type"])
                ):
                    raise IncompatibleError(
                        f"T2I-Adapter {self.source or '(unsaved)'} was made for another base ({key}={mine}, this base "
                        f"needs {base}); use an adapter trained for this base model."
                    )
        self.adapter = T2IAdapter(**cfg).to(dtype=unet.dtype).eval()
        n_feats = len(cfg["channels"]) + (1 if cfg.get("adapter_type") == "light_adapter" else 0)
        n_feats -= 1 if cfg.get("adapter_type") == "full_adapter_xl" else 0  # the last one goes to the mid block
        if n_feats != len(unet.config.block_out_channels):
            raise IncompatibleError(
                f"T2I-Adapter {self.source or '(unsaved)'} gives {n_feats} feature maps but this "
                f"base has {len(unet.config.block_out_channels)} down levels; use one made for it."
            )

    # ------------------------------------------------------------------ training
    def sample_timesteps(self, batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
        """Cubic sampling ``t = (1 - u^3) * T`` (mean t/T = 3/4), or uniform when turned off."""
        if not self.config.cubic_timesteps:
            return super().sample_timesteps(batch_size, num_train_timesteps, generator)
        return cubic_timesteps(batch_size, num_train_timesteps, generator)

    # ------------------------------------------------------------------ the step
    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        a = self.adapter
        return [x * float(self.config.conditioning_scale) for x in a(image.to(device=a.device, dtype=a.dtype))]

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if state.training:
            return StepExtras(down_intrablock_additional_residuals=self._features(self.condition_image(state)))
        src = state.inputs.get("image", state.inputs.get("condition"))
        if src is None:
            return None
        f = self.components.vae_scale_factor
        h, w = state.latents.shape[-2] * f, state.latents.shape[-1] * f
        key = (id(src), h, w, state.cond.batch_size, state.cond.cfg)
        if state.step == 0 or self._cache is None or self._cache[0] != key:  # timestep-independent: once per run
            image = condition_tensor(src, h, w, f)
            feats = self._features(image)  # on the distinct images, then spread over the batch (diffusers' order)
            feats = [control_batch(x, state) for x in feats]
            self._cache = (key, feats, src)
        return StepExtras(down_intrablock_additional_residuals=list(self._cache[1]))

    # ------------------------------------------------------------------ files
    @classmethod
    def from_file(cls, path: str | Path) -> T2IAdapterMethod:
        method = cls.from_diffusers_folder(path)
        if method is not None:
            return method
        meta = read_metadata(path)
        if meta.get("format") != ARTIFACT_FORMAT:
            raise FormatError(f"{path} is neither a tailor T2I-Adapter nor a diffusers adapter folder; pass one.")
        method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
        method.model_config, method.source = meta_json(meta, "model_config"), str(path)
        method.load_state_dict(load_tensors(path))
        return method

    @classmethod
    def folder_config(cls, folder: Path, model_config: dict[str, Any]) -> T2IAdapterConfig:
        kind = "light" if model_config.get("adapter_type") == "light_adapter" else "full"
        opts = {"adapter_type": kind, "num_res_blocks": int(model_config.get("num_res_blocks", 2))}
        return cls.config_cls.from_dict(opts, source=f"{cls.name} options")

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim diffusers ``T2IAdapter`` folders (given the folder or its weight file)."""
        return diffusers_folder(path, cls.diffusers_class) is not None
