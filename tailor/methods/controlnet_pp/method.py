"""ControlNet++ (Li et al. 2024): fine-tune a ControlNet with ``L = L_diffusion + lambda * L_reward``.

The reward is pixel-space cycle consistency, computed the paper's efficient way: for training samples with a small
timestep (``t <= 200``) the UNet's prediction gives ``x0`` in one step (``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``,
or ``sqrt(a) x_t - sqrt(1 - a) v``), the frozen VAE decodes it, a frozen *differentiable* condition extractor reads
the image, and its output is compared with the input condition (MSE for edge-like maps). Gradients flow through the
VAE decoder and the UNet into the ControlNet only.

The ControlNet itself is the registered ``controlnet`` method, composed through the registry (DESIGN.md #4), not
imported or subclassed: sampling, the condition data and the files are its own. Extractors: ``hf`` is exact
(:func:`tailor.conditions.soft_hf`); ``canny`` uses Sobel-magnitude soft edges as a differentiable stand-in for the
paper's differentiable Canny. Segmentation / depth rewards wait for the world's learned extractors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from tailor.conditions import soft_extractor
from tailor.core.artifacts import load
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.io import atomic_dir, load_tensors, meta_json, read_metadata
from tailor.core.latents import vae_decode
from tailor.core.method import ComposedMethod, get_spec
from tailor.errors import ConfigError, FormatError
from tailor.methods.controlnet_pp.config import ControlNetPPConfig


def predicted_x0(noisy: torch.Tensor, pred: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: str):
    """The clean latents the UNet's prediction implies, in one step (DDPM/DDIM algebra)."""
    a = alphas_cumprod.to(noisy.device)[t].float().view(-1, *([1] * (noisy.ndim - 1)))
    x, p = noisy.float(), pred.float()
    if kind == "epsilon":
        return (x - (1 - a).sqrt() * p) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * p
    if kind == "sample":
        return p
    raise ConfigError(f"ControlNet++ does not know prediction type {kind!r}.")


class ControlNetPPMethod(ComposedMethod):
    """A ControlNet (the registered ``controlnet`` method) trained with an extra consistency reward."""

    name = "controlnet_pp"
    config_cls = ControlNetPPConfig
    default_lr: ClassVar[float] = 1e-5

    def __init__(self, config: ControlNetPPConfig | None = None, _from_init: bool = True, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        inner_opts = dict(
            condition=cfg.condition,
            conditioning_scale=cfg.conditioning_scale,
            guess_mode=cfg.guess_mode,
            empty_prompts=cfg.empty_prompts,
        )
        if cfg.init and _from_init:
            inner = load(cfg.init)
            if inner.name != "controlnet":
                raise ConfigError(f"init {cfg.init} is a {inner.name} file; ControlNet++ fine-tunes a ControlNet.")
            if inner.config.condition != cfg.condition:
                raise ConfigError(
                    f"init {cfg.init} is a {inner.config.condition} ControlNet but condition is "
                    f"{cfg.condition}; pass --condition {inner.config.condition}."
                )
            inner.config = inner.config.replace(**inner_opts)
        else:
            inner = get_spec("controlnet").method(**inner_opts)
        self.inner = inner
        self.extractor = soft_extractor(cfg.condition)

    # ------------------------------------------------------------------ delegation to the ControlNet
    def attach(self, components) -> None:
        self.inner.patch(components)  # builds the ControlNet once, then re-attaches

    def detach(self, components) -> None:
        self.inner.unpatch()

    def wrap_dataset(self, dataset, config):
        return self.inner.wrap_dataset(dataset, config)

    def expand_batch(self, batch, keys, positions):
        return self.inner.expand_batch(batch, keys, positions)

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        return self.inner.step_kwargs(state)

    # ------------------------------------------------------------------ the reward
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion latents -> images Bx3xHxW in [0, 1], differentiably (the inverse of the trainer's scaling)."""
        image = vae_decode(self.components.vae, latents)
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def reward(self, pred: torch.Tensor, state: StepState) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(MSE between the extractor on the one-step image and the condition, or None; the selected samples)."""
        t = state.timestep.reshape(-1)
        sel = t <= self.config.reward_max_t
        condition = state.inputs.get("condition")
        if not bool(sel.any()) or condition is None or self.config.reward_weight == 0:
            return None, sel
        sched = self.components.scheduler
        kind = sched.config.get("prediction_type", "epsilon")
        x0 = predicted_x0(state.latents[sel], pred[sel], sched.alphas_cumprod, t[sel], kind)
        got = self.extractor(self.decode(x0))
        want = condition[sel].to(got)[:, :1]
        return F.mse_loss(got, want), sel

    def loss(self, pred, target, state, weights):
        loss, logs = super().loss(pred, target, state, weights)
        r, sel = self.reward(pred, state)
        if r is not None:
            loss = loss + self.config.reward_weight * r * (sel.float().mean())
            logs["reward"] = float(r.detach())
        return loss, logs

    # ------------------------------------------------------------------ weights and files
    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["condition"] = self.config.condition
        inner = self.inner.metadata()
        if "model_config" in inner:
            meta["model_config"] = inner["model_config"]
        return meta

    def save(self, out_dir: str | Path) -> Path:
        """``controlnet_pp.safetensors`` (tailor metadata) and ``controlnet/`` (a diffusers ControlNet folder)."""
        path = super().save(out_dir)
        cn = self.inner.controlnet
        if cn is not None:
            with atomic_dir(Path(out_dir) / "controlnet") as tmp:
                cn.save_pretrained(tmp)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> ControlNetPPMethod:
        meta = read_metadata(path)
        if meta.get("method") != cls.name:
            raise FormatError(f"{path} is not a ControlNet++ file; pass one written by `tailor train controlnet_pp`.")
        method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)), _from_init=False)
        method.inner.model_config = meta_json(meta, "model_config")
        method.inner.source = str(path)
        method.load_state_dict(load_tensors(path))
        return method
