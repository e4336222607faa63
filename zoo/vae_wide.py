"""Recipe: a sharper world VAE on the *same latents* (world v2, item 3), so the shipped base keeps working.

The shipped VAE (widths 16-32-64, one layer per block, 0.7M parameters) reconstructs fresh renders at ~20 dB PSNR;
its latents are what every diffusion model of the zoo was trained on. Retraining a VAE from scratch would change
that latent space and force the base and every adapter to be retrained. Instead a wider ``AutoencoderKL`` (the
student) is trained so that

* its **decoder** reconstructs the image from the *teacher's* latents (sampled from the teacher's posterior, as the
  diffusion model's samples are), with the reconstruction terms of :mod:`zoo.vae` plus the gradient-difference
  term for outlines and glyph strokes, and
* its **encoder** reproduces the teacher's posterior (mean and log-variance, MSE in units of the latent scale).

The student is one diffusers ``AutoencoderKL`` (any pipeline loads it); its ``scaling_factor`` is the teacher's, so
a UNet trained on the teacher's latents samples through the student unchanged. :func:`latent_agreement` measures
how closely the student's encoder matches (relative error of the means); the stage reports it beside the PSNR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from zoo.data import mixed_samples, to_batch
from zoo.loop import LoopConfig, current_device, train_loop
from zoo.vae import COLOUR_WEIGHT, EDGE_WEIGHT, gradient_loss

WIDE_CHANNELS = (32, 64, 128)
WIDE_LAYERS = 2
ENCODER_WEIGHT = 1.0


def build_wide_vae(teacher: AutoencoderKL, channels=WIDE_CHANNELS, layers: int = WIDE_LAYERS) -> AutoencoderKL:
    """A student of ``teacher``'s factor, latent channels and scaling, at ``channels`` widths."""
    t = teacher.config
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        latent_channels=t.latent_channels,
        norm_num_groups=8,
        sample_size=t.sample_size,
        scaling_factor=t.scaling_factor,
    )


def student_loss(student: AutoencoderKL, teacher: AutoencoderKL, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Decoder: reconstruction from the teacher's sampled latents; encoder: the teacher's posterior, per latent
    unit (the teacher's latents times its scaling factor have unit variance)."""
    with torch.no_grad():
        post_t = teacher.encode(x).latent_dist
        z = post_t.sample()
    rec = student.decode(z).sample
    l1, mse = F.l1_loss(rec, x), F.mse_loss(rec, x)
    colour = F.l1_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
    edge = gradient_loss(rec, x)
    post_s = student.encode(x).latent_dist
    s = teacher.config.scaling_factor
    enc = F.mse_loss(post_s.mean * s, post_t.mean * s) + 0.1 * F.mse_loss(post_s.logvar, post_t.logvar)
    loss = l1 + mse + COLOUR_WEIGHT * colour + EDGE_WEIGHT * edge + ENCODER_WEIGHT * enc
    return loss, {"l1": l1, "mse": mse, "edge": edge, "enc": enc}


def train_wide_vae(
    out: str,
    teacher: AutoencoderKL,
    steps: int = 4000,
    batch_size: int = 32,
    lr: float = 5e-4,
    size: int = 64,
    seed: int = 7,
    resume: bool = True,
    kinds: dict[str, float] | None = None,
    channels: tuple[int, ...] = WIDE_CHANNELS,
    layers: int = WIDE_LAYERS,
) -> AutoencoderKL:
    """Train the student of ``teacher`` (frozen) on the world mix (``kinds`` weights; default :data:`zoo.data.MIX`
    plus whatever v2 kinds the world renders)."""
    torch.manual_seed(seed)
    student = build_wide_vae(teacher, channels, layers)
    teacher = teacher.eval().requires_grad_(False)
    dev = current_device()
    teacher.to(dev)

    def loss_fn(step: int):
        return student_loss(student, teacher, to_batch(mixed_samples(batch_size, seed, step, size, kinds)).to(dev))

    cfg = LoopConfig(out=out, steps=steps, lr=lr, warmup_steps=min(100, steps // 10 + 1), seed=seed, resume=resume,
                     checkpoint_every=100)  # fmt: skip
    return train_loop(student, loss_fn, cfg, name="vae-wide")


@torch.no_grad()
def latent_agreement(student: AutoencoderKL, teacher: AutoencoderKL, n: int = 64, size: int = 64, seed: int = 99):
    """``|mean_s - mean_t| / |mean_t|`` (relative L2) and the largest per-image value on ``n`` fresh renders."""
    x = to_batch(mixed_samples(n, seed, 0, size))
    ms, mt = student.encode(x).latent_dist.mean, teacher.encode(x).latent_dist.mean
    per = (ms - mt).flatten(1).norm(dim=1) / mt.flatten(1).norm(dim=1).clamp_min(1e-8)
    return {"latent_rel_err": float(per.mean()), "latent_rel_err_max": float(per.max())}
