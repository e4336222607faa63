"""IC-Light (Zhang, Rao, Agrawala, ICLR 2025): relighting by concatenating a foreground's (and a background's)
latents to the UNet input, the whole UNet fine-tuned; its files are offsets over the base UNet.

The method widens ``conv_in`` by 4 (fc) or 8 (fbc) channels through the core hook
(:mod:`tailor.core.input_channels`), then adds its offsets to every UNet weight (``merged = base + offset``, the
official format, :mod:`.formats`); ``unpatch`` restores the base exactly (a CPU copy of its weights is kept while the
method is attached). Per UNet call it supplies the latents of the prepared foreground (and background)
(:mod:`.prepare`), one row per image, repeated over both classifier-free-guidance halves as the official demo does.
The initial latent is the pipeline's: text-to-image, or ``--init-image`` (e.g. a light-direction gradient) with
``--strength`` (the demo's "lowres denoise").

Training (the paper's lit pairs and its light-transport consistency loss) waits for world v2's relit renders: until
then a training batch without ``foreground`` uses the target image itself as the foreground (the plumbing runs; no
relighting is learned from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.conditioning import StepExtras, StepState
from tailor.core.input_channels import restore_conv_in, unet_in_channels, widen_conv_in
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import Method
from tailor.errors import ConfigError, IncompatibleError, InputError
from tailor.methods.ic_light import formats
from tailor.methods.ic_light.config import IcLightConfig
from tailor.methods.ic_light.prepare import background_array, encode_mode, foreground_array, to_model_range


class IcLightMethod(Method):
    """fc / fbc relighting: extra input channels + the whole UNet's offsets."""

    name = "ic_light"
    config_cls = IcLightConfig
    default_lr: ClassVar[float] = 1e-4  # the tiny world model; the paper fine-tunes SD1.5 at ~1e-5

    def __init__(self, config: IcLightConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._offsets: dict[str, torch.Tensor] | None = None  # loaded, applied on attach
        self._base: dict[str, torch.Tensor] = {}  # the widened base UNet's weights (CPU), while attached
        self._replaced_conv: nn.Conv2d | None = None
        self._cache: tuple | None = None

    @property
    def input_channels(self) -> int:  # type: ignore[override]
        latent = int(self.components.vae.config.latent_channels) if self.components is not None else 4
        return latent * self.config.condition_images

    # ------------------------------------------------------------------ attach / detach
    def modules(self) -> list[nn.Module]:
        return [] if self.components is None else [self.components.unet]

    def attach(self, components) -> None:
        if self._base:  # attached already (e.g. trained, then sampled through a pipeline)
            return
        unet = components.unet
        latent = int(components.vae.config.latent_channels)
        if unet_in_channels(unet) != latent:
            raise IncompatibleError(
                f"IC-Light widens a plain UNet ({latent} input channels); this base's takes {unet_in_channels(unet)} "
                f"(an inpainting base?) — attach it to a plain base."
            )
        self._replaced_conv = widen_conv_in(unet, self.input_channels)
        self._base = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
        if self._offsets is not None:
            try:
                self._apply(unet, self._offsets)
            except IncompatibleError:
                self.detach(components)
                raise
        unet.requires_grad_(True)

    def _apply(self, unet, offsets: dict[str, torch.Tensor]) -> None:
        own = unet.state_dict()
        missing = sorted(set(own) - set(offsets))
        unknown = sorted(set(offsets) - set(own))
        source = self.source_file or "the IC-Light offsets"
        if unknown or missing:
            key = (unknown or missing)[0]
            raise IncompatibleError(
                f"{source} does not match this base's UNet ({len(unknown)} unknown and {len(missing)} missing keys, "
                f"e.g. {key}); use offsets made for this base."
            )
        for k, v in offsets.items():
            if own[k].shape != v.shape:
                raise IncompatibleError(
                    f"{source} is for a base of other widths ({k} has shape {tuple(v.shape)}, this base's "
                    f"{tuple(own[k].shape)}); use offsets made for this base."
                )
        with torch.no_grad():
            for k, v in offsets.items():
                own[k].add_(v.to(own[k]))

    def detach(self, components) -> None:
        unet = components.unet
        if self._base:
            self._offsets = self.state_dict_plain()
            unet.load_state_dict(self._base)
            self._base = {}
        if self._replaced_conv is not None:
            restore_conv_in(unet, self._replaced_conv)
            self._replaced_conv = None
        unet.requires_grad_(False)
        self._cache = None

    # ------------------------------------------------------------------ the condition latents
    def _latents(self, foreground: Any, background: Any, height: int, width: int) -> torch.Tensor:
        arrays = [foreground_array(foreground, width, height)]
        if self.config.mode == "fbc":
            if background is None:
                raise InputError("an fbc IC-Light model needs a background image; pass --ic-light MODEL=FG+BG.")
            arrays.append(background_array(background, width, height))
        lat = encode_mode(self.components.vae, to_model_range(arrays))
        return torch.cat(list(lat.split(1)), dim=1)  # [fg | bg] along channels (the fbc demo)

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        c = self.components
        if state.training:
            pixels = state.inputs["pixel_values"]
            parts = [state.inputs.get("foreground", pixels)]
            if self.config.mode == "fbc":
                parts.append(state.inputs.get("background", torch.zeros_like(pixels)))
            lat = torch.cat([encode_mode(c.vae, p.to(c.vae.dtype)) for p in parts], dim=1)
            return StepExtras(input_channels=lat.to(state.latents.dtype))
        fg, bg = _references(state.inputs)
        f = c.vae_scale_factor
        h, w = state.latents.shape[-2] * f, state.latents.shape[-1] * f
        key = (id(fg), id(bg), h, w)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._latents(fg, bg, h, w), fg, bg)  # keep the inputs alive: ids stay unique
        lat = self._cache[1].to(state.latents.device, state.latents.dtype)
        return StepExtras(input_channels=lat.repeat(state.cond.batch_size, 1, 1, 1))

    # ------------------------------------------------------------------ weights and files
    def state_dict_plain(self) -> dict[str, torch.Tensor]:
        """The offsets over the base UNet (official keys): the attached UNet minus the base, else the loaded ones."""
        if not self._base:
            return dict(self._offsets or {})
        own = self.components.unet.state_dict()
        return {k: (own[k].detach().cpu() - v) for k, v in self._base.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.name}.{k}": v for k, v in self.state_dict_plain().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = f"{self.name}."
        offsets = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
        if self._base:  # attached: re-base on the original weights
            unet = self.components.unet
            unet.load_state_dict(self._base)
            self._apply(unet, offsets)
        else:
            self._offsets = offsets

    def save(self, out_dir: str | Path) -> Path:
        """``ic_light.safetensors`` (tailor metadata) and ``iclight_<mode>.safetensors`` (the official layout).

        The attached weights are first set to ``base + offset`` (a rounding step of at most one float ulp), so a file
        loaded onto the base reproduces this model bit for bit."""
        if self._base:
            offsets = self.state_dict_plain()
            own = self.components.unet.state_dict()
            with torch.no_grad():
                for k, v in self._base.items():
                    own[k].copy_(v.to(own[k]) + offsets[k].to(own[k]))
        path = super().save(out_dir)
        formats.write_offsets(Path(out_dir) / f"iclight_{self.config.mode}.safetensors", self.state_dict_plain())
        return path

    @classmethod
    def sniff(cls, path: Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path: str | Path) -> IcLightMethod:
        """A tailor file or an official offsets file (fc / fbc read from ``conv_in.weight``)."""
        meta = read_metadata(path)
        tensors = load_tensors(path)
        if meta.get("format") == "tailor":
            config = cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path))
        else:
            config = cls.config_cls(mode=formats.mode_of(tensors, path))
        method = cls(config)
        method.load_state_dict(tensors)
        return method


def _references(inputs: dict[str, Any]) -> tuple[Any, Any]:
    """(foreground, background) from the attachment's inputs: ``foreground`` (one path or image, or a list of two:
    foreground and background) and an optional ``background``."""
    fg, bg = inputs.get("foreground"), inputs.get("background")
    if isinstance(fg, list | tuple):
        if len(fg) > 2 or not fg:
            raise ConfigError(f"IC-Light takes a foreground and at most one background; got {len(fg)} images.")
        fg, bg = fg[0], (fg[1] if len(fg) == 2 else bg)
    if fg is None:
        raise InputError("IC-Light needs a foreground image; pass --ic-light MODEL=FG[+BG] or --foreground IMG.")
    return fg, bg
