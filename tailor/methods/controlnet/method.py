"""ControlNet (Zhang et al. 2023): a trainable copy of the UNet encoder + mid block, fed a condition image through a
small hint encoder, whose zero-conv outputs are added to the frozen UNet's skip connections.

The ControlNet is diffusers' ``ControlNetModel.from_unet`` with the hint encoder sized to the base's VAE factor
(``log2(factor) + 1`` widths of 16/32/96/256), so the same code serves SD1.5 and the tiny world model. At every
UNet call ``step_kwargs`` runs it on the attachment's image (sampling) or ``batch["condition"]`` (training) and
returns ``down_block_additional_residuals`` + ``mid_block_additional_residual``; the pipeline scales them by the
attachment weight and honours start/end. Guess mode follows diffusers: residual scales ``logspace(-1, 0, n)`` and
no control on the unconditional half. Several ControlNets = several attachments (their residuals are summed).

Files: ``controlnet.safetensors`` (keys ``controlnet.<diffusers key>``; tailor metadata names the condition kind
and carries the model config) and ``controlnet/`` (``save_pretrained``: diffusers' ``ControlNetModel.from_pretrained``
loads it). Reads diffusers folders and original ``control_model.*`` files (see ``formats.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.conditions.method import ConditionedModelMethod
from tailor.core.components import module_dtype
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.control import controlnet_from_unet, drop_captions, hint_channels, pad_uncond
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import ARTIFACT_FORMAT
from tailor.core.model_method import diffusers_folder
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.controlnet import formats
from tailor.methods.controlnet.config import ControlNetConfig

#: ControlNet config fields that must equal the base UNet's for the residuals to fit
_MUST_MATCH = ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim", "down_block_types")


class ControlNetMethod(ConditionedModelMethod):
    """One ControlNet; attach it with ``image=<condition image>`` (path, PIL, uint8 array or [0, 1] tensor)."""

    name = "controlnet"
    config_cls = ControlNetConfig
    default_lr: ClassVar[float] = 1e-5  # the paper's AdamW learning rate
    model_attr = "controlnet"
    label = "ControlNet"
    diffusers_class = "ControlNetModel"
    controlnet: nn.Module | None

    def __init__(self, config: ControlNetConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._original: dict[str, torch.Tensor] | None = None  # original-layout weights waiting for the base

    @classmethod
    def file_layout(cls):
        """This folder's ``formats`` (the original ``control_model.*`` layout; AnyDoor's checkpoints hold one)."""
        return formats

    # ------------------------------------------------------------------ build
    def build(self, components) -> None:
        from diffusers import ControlNetModel

        unet, f = components.unet, components.vae_scale_factor
        if self.model_config is not None:
            cfg = {k: v for k, v in self.model_config.items() if not k.startswith("_")}
            vae = getattr(components, "vae", None)
            latent = getattr(getattr(vae, "config", None), "latent_channels", None)
            self.check_base(cfg, unet.config, f, latent)
            self.controlnet = ControlNetModel.from_config(cfg)
        else:
            hint = hint_channels(f)
            if self._original is not None:
                hint = formats.hint_channels_of(self._original)
            latent = int(components.vae.config.latent_channels)
            self.controlnet = controlnet_from_unet(unet, latent, conditioning_embedding_out_channels=hint)
        self.controlnet.to(dtype=unet.dtype).eval()
        if self._original is not None:
            original, self._original = self._original, None
            keys = list(self.controlnet.state_dict())
            state = formats.diffusers_from_original(original, keys, int(self.controlnet.config.layers_per_block))
            self._pending_state = {f"{self.name}.{k}": v for k, v in state.items()}

    def check_base(self, cfg: dict[str, Any], unet_cfg, vae_factor: int, latent_channels: int | None = None) -> None:
        """Refuse a ControlNet made for another base. Its ``in_channels`` is checked against the latents it reads
        (``latent_channels``: the VAE's), not the UNet's ``conv_in``, which an inpainting / IC-Light / try-on UNet
        widens while the ControlNet still reads the noisy latents alone (as diffusers' ControlNet-inpaint pipeline)."""
        for key in _MUST_MATCH:
            mine, base = cfg.get(key), unet_cfg.get(key) if hasattr(unet_cfg, "get") else getattr(unet_cfg, key)
            if key == "in_channels" and latent_channels is not None:
                base = latent_channels
            mine = list(mine) if isinstance(mine, (list, tuple)) else mine
            base = list(base) if isinstance(base, (list, tuple)) else base
            if key in cfg and mine != base:
                raise IncompatibleError(
                    f"ControlNet {self.source or '(unsaved)'} was made for another base ({key}={mine}, this base has "
                    f"{base}); use a ControlNet trained for this base model."
                )
        hint = cfg.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)
        if 2 ** (len(hint) - 1) != vae_factor:
            raise IncompatibleError(
                f"ControlNet {self.source or '(unsaved)'} downsamples its hint by {2 ** (len(hint) - 1)} but this "
                f"base's VAE factor is {vae_factor}; use a ControlNet trained for this base model."
            )

    # ------------------------------------------------------------------ training data
    def expand_batch(self, batch, keys, positions):
        """The paper's 50% empty prompts, drawn per sample position (resumable)."""
        return drop_captions(batch, positions, self._seed, self.config.empty_prompts), keys, positions

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        image = self.condition_image(state)
        if image is None:
            return None
        cn, cond = self.controlnet, state.cond
        guess = bool(self.config.guess_mode or cn.config.global_pool_conditions)
        cond_only = guess and cond.cfg
        latents, hidden, added = state.latents, cond.encoder_hidden_states, cond.added_cond_kwargs
        if cond_only:
            latents, hidden = latents.chunk(2)[1], hidden.chunk(2)[1]
            added = None if added is None else {k: v.chunk(2)[1] for k, v in added.items()}
        image = self.condition_batch(image, state, cond_only=cond_only)
        dtype = module_dtype(cn)
        down, mid = cn(
            latents.to(dtype),
            state.timestep,
            encoder_hidden_states=hidden.to(dtype),
            controlnet_cond=image.to(dtype),
            conditioning_scale=float(self.config.conditioning_scale),
            guess_mode=guess,
            added_cond_kwargs=added,
            return_dict=False,
        )
        down = list(down)
        if cond_only:
            down, mid = pad_uncond(down), pad_uncond([mid])[0]
        return StepExtras(down_block_additional_residuals=down, mid_block_additional_residual=mid)

    # ------------------------------------------------------------------ weights and files
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Also original ``control_model.*`` weights: converted once the base gives the diffusers layout."""
        if formats.is_original(state):
            self._original = formats.strip_original(state)
            if not self._built:
                return
            self._built = False  # rebuild around the original file's hint encoder
            self.build(self.components)
            self._built = True
            self.controlnet.to(self.components.device)
            state, self._pending_state = self._pending_state, None
        super().load_state_dict(state)

    @classmethod
    def from_file(cls, path: str | Path) -> ControlNetMethod:
        """A tailor file, a diffusers ControlNet folder (or its weight file), or an original-layout file."""
        path = Path(path)
        if path.is_dir() or path.suffix == ".safetensors":
            method = cls.from_diffusers_folder(path)
            if method is not None:
                return method
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        tensors = load_tensors(path)
        if meta.get("format") == ARTIFACT_FORMAT:
            method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
            method.model_config = meta_json(meta, "model_config")
        elif formats.is_original(tensors):
            method = cls()
        else:
            raise FormatError(
                f"{path} is neither a tailor ControlNet, a diffusers ControlNet nor an original "
                f"control_model file; pass one of those."
            )
        method.source = str(path)
        method.load_state_dict(tensors)
        return method

    @classmethod
    def folder_config(cls, folder: Path, model_config: dict[str, Any]) -> ControlNetConfig:
        """A diffusers folder does not say its condition: a ``tailor.json`` beside it may, else canny."""
        for cand in (folder / "tailor.json", folder.parent / "tailor.json"):
            try:
                cond = json.loads(cand.read_text()).get("condition")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if cond:
                return ControlNetConfig(condition=cond)
        return ControlNetConfig()

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim diffusers ControlNet folders / weight files and original ``control_model`` files."""
        path = Path(path)
        if diffusers_folder(path, cls.diffusers_class) is not None:
            return True
        if path.suffix != ".safetensors":
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
            return False
        return any(k.startswith(("control_model.input_hint_block.", "input_hint_block.")) for k in keys)
