"""Recipe: the world VAE (diffusers ``AutoencoderKL``), trained on the whole world (objects in every style, faces,
scenes, subjects) so later methods never retrain it.

Downsampling factor 4 (three encoder blocks): 64x64x3 images <-> 16x16x4 latents. Loss: L1 + MSE reconstruction,
a patch-colour L1 term and a small KL term (Rombach et al. 2022 keep the KL tiny so latents stay informative; we
add no GAN/LPIPS term on these flat-shaded renders). After training, ``scaling_factor`` is set to 1 / std of the
latents of fresh renders, as SD does, so the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from zoo.data import mixed_samples, to_batch
from zoo.loop import LoopConfig, current_device, train_loop

KL_WEIGHT = 1e-6
COLOUR_WEIGHT = 2.0
EDGE_WEIGHT = 1.0  # decoder refinement only (see finetune_decoder)


def gradient_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of ``rec`` and ``x`` (the gradient difference loss
    of Mathieu et al. 2016): L1/MSE alone let a decoder round corners and blur outlines at no great cost."""
    dx = F.l1_loss(rec[..., :, 1:] - rec[..., :, :-1], x[..., :, 1:] - x[..., :, :-1])
    dy = F.l1_loss(rec[..., 1:, :] - rec[..., :-1, :], x[..., 1:, :] - x[..., :-1, :])
    return dx + dy


def build_vae(channels: tuple[int, ...] = (16, 32, 64), size: int = 64) -> AutoencoderKL:
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        # groups of >= 4 channels: with one channel per group GroupNorm is an instance norm, which removes each
        # image's per-channel mean at the first layer and with it absolute colour (the first VAE mixed up colours)
        norm_num_groups=4,
        sample_size=size,
    )


def vae_loss(vae: AutoencoderKL, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    l1, mse = F.l1_loss(rec, x), F.mse_loss(rec, x)
    # mean colour of each 4x4 patch (one latent pixel): pushes the latents to carry hue, which plain L1/MSE on
    # textured renders learns slowly (short runs mixed up red/orange/yellow and purple/blue objects)
    colour = F.l1_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
    kl = post.kl().mean() / x[0].numel()
    loss = l1 + mse + COLOUR_WEIGHT * colour + KL_WEIGHT * x[0].numel() * kl
    return loss, {"l1": l1, "mse": mse, "colour": colour, "kl": kl}


def train_vae(
    out: str,
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 1e-3,
    size: int = 64,
    channels: tuple[int, ...] = (16, 32, 64),
    seed: int = 0,
    resume: bool = True,
    init: str | None = None,
) -> AutoencoderKL:
    """Train the VAE; ``init`` (a diffusers AutoencoderKL folder of the same channels) warm-starts it."""
    torch.manual_seed(seed)
    vae = build_vae(channels, size)
    if init is not None:  # GroupNorm's parameters do not depend on the number of groups: any grouping loads
        vae.load_state_dict(AutoencoderKL.from_pretrained(init, local_files_only=True).state_dict())

    dev = current_device()

    def loss_fn(step: int):
        return vae_loss(vae, to_batch(mixed_samples(batch_size, seed, step, size)).to(dev))

    cfg = LoopConfig(
        out=out,
        steps=steps,
        lr=lr,
        warmup_steps=min(100, steps // 10 + 1),
        seed=seed,
        resume=resume,
        checkpoint_every=100,
    )
    train_loop(vae, loss_fn, cfg, name="vae")
    vae.register_to_config(scaling_factor=latent_scaling(vae, size=size))
    return vae


def finetune_decoder(
    out: str,
    init: AutoencoderKL,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 5e-4,
    size: int = 64,
    seed: int = 1,
    resume: bool = True,
) -> AutoencoderKL:
    """Train only the decoder of ``init`` (encoder, quant conv and hence the latents stay fixed).

    This improves reconstructions after the diffusion model started training on the encoder's latents; the loss adds
    :func:`gradient_loss` (weight :data:`EDGE_WEIGHT`) for outlines and corners.
    """
    vae = init
    vae.requires_grad_(False)
    for m in (vae.decoder, vae.post_quant_conv):
        m.requires_grad_(True)

    dev = current_device()

    def loss_fn(step: int):
        x = to_batch(mixed_samples(batch_size, seed, step, size)).to(dev)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        l1, mse = F.l1_loss(rec, x), F.mse_loss(rec, x)
        colour = F.l1_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
        edge = gradient_loss(rec, x)
        loss = l1 + mse + COLOUR_WEIGHT * colour + EDGE_WEIGHT * edge
        return loss, {"l1": l1, "mse": mse, "colour": colour, "edge": edge}

    cfg = LoopConfig(out=out, steps=steps, lr=lr, warmup_steps=50, seed=seed, resume=resume, checkpoint_every=100)
    train_loop(vae, loss_fn, cfg, name="vae-decoder")
    return vae


@torch.no_grad()
def latent_scaling(vae: AutoencoderKL, n: int = 256, size: int = 64, seed: int = 1234) -> float:
    """1 / std of the (mean) latents of ``n`` fresh renders."""
    x = to_batch(mixed_samples(n, seed, 0, size))
    z = torch.cat([vae.encode(x[i : i + 64]).latent_dist.mean for i in range(0, n, 64)])
    return float(1.0 / z.std())


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, n: int = 256, size: int = 64, seed: int = 4321) -> dict[str, float]:
    """Reconstruction error on fresh renders (pixels in [0, 1]): MSE, MAE, PSNR; per kind and overall."""
    from zoo.data import available_kinds

    vae.eval()
    out: dict[str, float] = {}
    total = []
    for kind in available_kinds():
        x = to_batch(mixed_samples(n // 4, seed, 0, size, kinds={kind: 1.0}))
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        err = ((rec - x) / 2) ** 2
        out[f"mse_{kind}"] = float(err.mean())
        out[f"psnr_{kind}"] = float(-10 * math.log10(err.mean().item()))
        total.append(err.flatten())
        out[f"mae_{kind}"] = float(((rec - x) / 2).abs().mean())
    allerr = torch.cat(total)
    out["mse"] = float(allerr.mean())
    out["psnr"] = float(-10 * math.log10(allerr.mean().item()))
    return out
