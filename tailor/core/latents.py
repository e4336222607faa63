"""VAE latents <-> diffusion latents: the one place that knows a VAE's ``scaling_factor`` / ``shift_factor`` /
``latents_mean`` + ``latents_std`` (SDXL-style per-channel statistics), shared by the trainer, the pipeline and
methods that decode predictions (ControlNet++'s reward).
"""

from __future__ import annotations

import torch


def _stats(cfg, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The VAE's per-channel latent mean and std as ``1xCx1x1`` tensors, or None when it has none."""
    if getattr(cfg, "latents_mean", None) is None or getattr(cfg, "latents_std", None) is None:
        return None
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1).to(latents)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1).to(latents)
    return mean, std


def scale_latents(vae_config, latents: torch.Tensor) -> torch.Tensor:
    """VAE latents -> diffusion latents (what the UNet is trained on)."""
    stats = _stats(vae_config, latents)
    if stats is not None:
        mean, std = stats
        return (latents - mean) * vae_config.scaling_factor / std
    shift = getattr(vae_config, "shift_factor", None) or 0.0
    return (latents - shift) * vae_config.scaling_factor


def unscale_latents(vae_config, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion latents -> VAE latents (the inverse of :func:`scale_latents`)."""
    stats = _stats(vae_config, latents)
    if stats is not None:
        mean, std = stats
        return latents * std / vae_config.scaling_factor + mean
    return latents / vae_config.scaling_factor + (getattr(vae_config, "shift_factor", None) or 0.0)


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion latents -> the VAE's images BxCxHxW in [-1, 1] (in the VAE's dtype; differentiable)."""
    return vae.decode(unscale_latents(vae.config, latents).to(vae.dtype), return_dict=False)[0]
