"""A method whose weights are a ControlNet plus small trainable modules, saved in named groups (Control-GPT, ODGEN).

:class:`GroupedControlMethod` holds what those methods share: building the ControlNet (from a file's model config,
or a copy of the base UNet's encoder optionally started from another ControlNet: the world's ``layout`` or a file),
the grouped state dict (``<method>.<group>.<module key>``, one group per module attribute named in ``groups``), the
ControlNet's model config in the metadata and :meth:`from_file`. The file format is the one both methods wrote before
this class existed (byte-identical).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core import resources
from tailor.core.control import controlnet_from_unet, hint_channels
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import Method, load_module_state
from tailor.errors import FormatError, IncompatibleError, InputError


class GroupedControlMethod(Method):
    """Subclasses set ``groups`` (``"control"`` first, then their own module attributes) and call
    :meth:`build_control` from ``build``."""

    groups: ClassVar[tuple[str, ...]] = ("control",)

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.control: nn.Module | None = None
        self.model_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the ControlNet
    def build_control(self, components) -> None:
        """``self.control`` for ``components`` (SD1.x / SD2-style): the file's ControlNet config, else a copy of the
        UNet's encoder started from ``config.init`` (unless weights are pending); in the UNet's dtype, eval mode."""
        from diffusers import ControlNetModel

        if components.is_sdxl:
            raise IncompatibleError(f"{self.name} supports SD1.x / SD2-style bases (one CLIP text encoder); not SDXL.")
        unet = components.unet
        if self.model_config is not None:
            cfg = {k: v for k, v in self.model_config.items() if not k.startswith("_")}
            if list(cfg.get("block_out_channels", [])) != list(unet.config.block_out_channels):
                raise IncompatibleError(
                    f"{self.name} {self.source_file or ''} was made for another base (block_out_channels "
                    f"{cfg.get('block_out_channels')}); use one trained for this base."
                )
            self.control = ControlNetModel.from_config(cfg)
        else:
            self.control = controlnet_from_unet(
                unet,
                int(components.vae.config.latent_channels),
                conditioning_embedding_out_channels=hint_channels(components.vae_scale_factor),
            )
            if self._pending_state is None and self.config.init != "none":
                self._load_init(self.config.init)
        self.control.to(dtype=unet.dtype).eval()

    def _load_init(self, init: str) -> None:
        """ControlNet weights to start training from (the shipped ``layout`` ControlNet or a file / folder)."""
        path = Path(init)
        if init == "layout" and not path.exists():  # the shipped adapter (a registered ``artifact`` resource)
            found = resources.resolve("artifact", "layout")
            path = Path(found) / "controlnet" if found is not None else path
        if path.is_dir():
            path = path / "diffusion_pytorch_model.safetensors"
        if not path.is_file():
            raise InputError(
                f"{self.name} init {init!r} is not a ControlNet folder or file; pass none, layout or one."
            )
        state = {k.removeprefix("controlnet."): v for k, v in load_tensors(path).items()}
        own = self.control.state_dict()
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise IncompatibleError(
                f"{self.name} init {path} is not a ControlNet of this base; pass none or one trained on this base."
            )
        self.control.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})

    # ------------------------------------------------------------------ weights and files
    def modules(self) -> list[nn.Module]:
        return [m for m in (getattr(self, g) for g in self.groups) if m is not None]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        return {f"{self.name}.{g}.{k}": v for g in self.groups for k, v in getattr(self, g).state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        for group in self.groups:
            prefix = f"{self.name}.{group}."
            module = getattr(self, group)
            own = module.state_dict()
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            sub = {k: v.to(own[k].dtype) if k in own else v for k, v in sub.items()}
            load_module_state(module, sub, f"{self.name} {group} {self.source_file or ''}".strip())

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        if self.control is not None:
            meta["model_config"] = {k: v for k, v in self.control.config.items() if not k.startswith("_")}
        return meta

    @classmethod
    def from_file(cls, path: str | Path):
        meta = read_metadata(path) if Path(path).suffix == ".safetensors" else {}
        if meta.get("method") != cls.name:
            article = "an" if cls.name[:1] in "aeiou" else "a"
            raise FormatError(
                f"{path} is not {article} {cls.name} file; pass one written by `tailor train {cls.name}`."
            )
        method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
        method.model_config = meta_json(meta, "model_config")
        method.source_file = str(path)
        method.load_state_dict(load_tensors(path))
        return method
