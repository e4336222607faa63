"""Full fine-tuning of the base UNet (and optionally the text encoder) with the LDM objective (Rombach et al. 2022).

The method trains the base's own modules in place: ``build`` turns on their gradients and keeps a CPU copy of the
original weights, so ``unpatch()`` restores the base exactly. Saved files: ``finetune.safetensors`` (the trained
modules, keys ``finetune.unet.*`` / ``finetune.text_encoder.*``, tailor metadata) and ``pipeline/``, a diffusers
``StableDiffusionPipeline`` folder that ``from_pretrained`` loads without tailor.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from tailor.core.method import Method, load_module_state
from tailor.methods.finetune.config import FinetuneConfig


class FinetuneMethod(Method):
    """Train the UNet (all of it, or its attention weights) and optionally the text encoder(s)."""

    name = "finetune"
    config_cls = FinetuneConfig
    default_lr: ClassVar[float] = 1e-4  # the tiny world model; real SD bases want ~1e-5 (pass --lr)

    def __init__(self, config: FinetuneConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._original: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def trains_text_encoder(self) -> bool:  # type: ignore[override]
        return bool(self.config.train_text_encoder)

    def named_modules(self) -> dict[str, nn.Module]:
        c = self.components
        if c is None:
            return {}
        mods: dict[str, nn.Module] = {"unet": c.unet}
        if self.config.train_text_encoder:
            mods["text_encoder"] = c.text_encoder
            if c.text_encoder_2 is not None:
                mods["text_encoder_2"] = c.text_encoder_2
        return mods

    def modules(self) -> list[nn.Module]:
        return list(self.named_modules().values())

    def param_groups(self, lr: float) -> list[dict]:
        """The UNet at ``lr``; the text encoder(s) at ``text_encoder_lr`` when given."""
        te_lr = self.config.text_encoder_lr
        if te_lr is None:
            return super().param_groups(lr)
        groups = []
        for key, m in self.named_modules().items():
            params = [p for p in m.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr if key == "unet" else te_lr})
        return groups

    # ------------------------------------------------------------------ attach / detach
    def build(self, components) -> None:
        self._original = {
            k: {n: t.detach().to("cpu", copy=True) for n, t in m.state_dict().items()}
            for k, m in self.named_modules().items()
        }

    def attach(self, components) -> None:
        for key, m in self.named_modules().items():
            m.requires_grad_(False)
            for pname, p in m.named_parameters():
                p.requires_grad_(key != "unet" or self._unet_param_trained(pname))

    def detach(self, components) -> None:
        """Restore the base's original weights and freeze it; the trained ones come back on the next patch()."""
        self._pending_state = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}
        for key, m in self.named_modules().items():
            if key in self._original:
                m.load_state_dict(self._original[key])
            m.requires_grad_(False)
            m.eval()
        self._built = False  # a later patch() copies the (restored) weights afresh
        self._original = {}

    def _unet_param_trained(self, name: str) -> bool:
        which = self.config.unet_params
        if which == "all":
            return True
        if which == "attention":
            return ".attn1." in name or ".attn2." in name
        return ".attn2." in name

    # ------------------------------------------------------------------ weights and files
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.name}.{k}.{n}": t for k, m in self.named_modules().items() for n, t in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built or self.components is None:
            self._pending_state = dict(state)
            return
        for key, m in self.named_modules().items():
            prefix = f"{self.name}.{key}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            load_module_state(m, sub, f"{self.name} {key}")

    def save(self, out_dir: str | Path) -> Path:
        """``finetune.safetensors`` plus a diffusers pipeline folder ``<out_dir>/pipeline``."""
        path = super().save(out_dir)
        if self.components is not None:
            self.components.save_pipeline(Path(out_dir) / "pipeline")
        return path
