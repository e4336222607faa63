"""Random streams, noise and loss weights of the diffusion objective (DDPM, Ho et al. 2020).

* Every random draw of a training sample comes from a generator seeded by ``(seed, stream, position)``, where
  ``position`` is the sample's global index in the run (optimizer step, micro-step, process and slot folded into
  one number). So a run is a pure function of its config: a resumed run, a run with more gradient accumulation or
  more processes draws exactly the same noise, timesteps and dropout for the same sample.
* Offset noise (Guttenberg 2023): ``noise += offset * randn(C, 1, 1)`` per sample.
* v-prediction target (Salimans & Ho 2022) through the scheduler's ``get_velocity``.
* min-SNR-gamma weights (Hang et al. 2023), as diffusers' ``train_text_to_image.py``:
  ``min(snr, gamma) / snr`` for epsilon, ``min(snr, gamma) / (snr + 1)`` for v-prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAM_TRAIN = 0  # noise / timesteps / dropout of training samples
STREAM_VAL = 1  # fixed noise / timesteps of held-out samples
STREAM_DATA = 2  # per-epoch data permutations
STREAM_SPLIT = 3  # train / validation split of a folder dataset


def seed_for(*keys: int) -> int:
    """A well-mixed 63-bit seed from non-negative integer keys (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def generator(*keys: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed_for(*keys))


@dataclass
class Draws:
    """One micro-batch's random draws (CPU tensors; the loop moves them to the device)."""

    latent_eps: torch.Tensor  # (B, C, h, w) standard normal, samples the VAE posterior
    noise: torch.Tensor  # (B, C, h, w) diffusion noise (offset included)
    timesteps: torch.Tensor  # (B,) long
    drop_caption: list[bool]


def uniform_timesteps(batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """Training timesteps drawn uniformly from ``[0, T)`` (DDPM; every method's default)."""
    return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)


def cubic_timesteps(batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """Cubic sampling ``t = (1 - u^3) T`` (T2I-Adapter, Mou et al. 2023): mean t/T = 3/4, more of the large t where a
    sample gets its layout (what a spatial condition controls)."""
    u = torch.rand(batch_size, generator=generator)
    return ((1 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


#: ``TrainConfig.timestep_sampling`` choices other than ``method`` (the method's own :meth:`Method.sample_timesteps`)
TIMESTEP_SAMPLERS = {"uniform": uniform_timesteps, "cubic": cubic_timesteps}


def draw(
    seed: int,
    stream: int,
    positions: list[int],
    latent_shape: tuple[int, int, int],
    num_train_timesteps: int,
    sample_timesteps,
    noise_offset: float = 0.0,
    caption_dropout: float = 0.0,
) -> Draws:
    """Draw every sample's randoms from its own generator, always in the same order."""
    eps, noise, ts, drop = [], [], [], []
    for p in positions:
        g = generator(seed, stream, p)
        eps.append(torch.randn(latent_shape, generator=g))
        n = torch.randn(latent_shape, generator=g)
        if noise_offset > 0:
            n = n + noise_offset * torch.randn((latent_shape[0], 1, 1), generator=g)
        noise.append(n)
        ts.append(sample_timesteps(1, num_train_timesteps, g).reshape(1).long())
        drop.append(bool(torch.rand((), generator=g) < caption_dropout) if caption_dropout > 0 else False)
    return Draws(torch.stack(eps), torch.stack(noise), torch.cat(ts), drop)


def compute_snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at ``timesteps`` (float32)."""
    ac = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac)


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma for an epsilon or v-prediction target."""
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        # zero-terminal-SNR schedules have snr = 0 at the last step: 0/0 there, weight it 1 instead
        return torch.where(snr > 0, clipped / snr.clamp(min=1e-20), torch.ones_like(snr))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"min-SNR weighting does not know prediction type {prediction_type!r}")


def training_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "sample":
        return latents
    raise ValueError(f"unknown prediction type {prediction_type!r}")
