"""Recipe: a sharper world VAE on the *same latents* (world v2, item 3), so the shipped base keeps working.

The shipped VAE (widths 16-32-64, one layer per block, 0.7M parameters) reconstructs fresh renders at ~20 dB PSNR;
its latents are what every diffusion model of the zoo was trained on. Retraining a VAE from scratch would change
that latent space and force the base and every adapter to be retrained. Instead the teacher is *grown*
(:func:`grow_vae`): a wider, deeper ``AutoencoderKL`` (the student) that starts as an exact copy of the teacher's
function, so its encoder gives the teacher's latents (it stays frozen) and only its decoder trains, from where the
teacher's decoder is, to reconstruct the image from the teacher's sampled latents (as the diffusion model's samples
are drawn) with the reconstruction terms of :mod:`zoo.vae` plus the gradient-difference term for outlines and
glyph strokes.

The student is one diffusers ``AutoencoderKL`` (any pipeline loads it); its ``scaling_factor`` is the teacher's, so
a UNet trained on the teacher's latents samples through the student unchanged. :func:`latent_agreement` measures
how closely the student's encoder matches (relative error of the means, ~1e-6); the stage reports it beside the
PSNR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from zoo.data import VAE_MIX, BatchRenderer, mixed_samples, to_batch
from zoo.loop import LoopConfig, current_device, train_loop
from zoo.vae import COLOUR_WEIGHT, EDGE_WEIGHT, gradient_loss

WIDE_CHANNELS = (32, 64, 128)
WIDE_LAYERS = 2


def build_wide_vae(
    teacher: AutoencoderKL, channels=WIDE_CHANNELS, layers: int = WIDE_LAYERS, norm_num_groups: int = 8
) -> AutoencoderKL:
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
        norm_num_groups=norm_num_groups,
        sample_size=t.sample_size,
        scaling_factor=t.scaling_factor,
    )


@torch.no_grad()
def grow_vae(
    teacher: AutoencoderKL, channels=WIDE_CHANNELS, layers: int = WIDE_LAYERS, seed: int = 0
) -> AutoencoderKL:
    """A wider, deeper ``AutoencoderKL`` that computes *exactly* what ``teacher`` computes (up to float rounding):
    the function-preserving widening of Net2Net (Chen et al. 2016) in its zero-outgoing form.

    Every teacher tensor goes into the top-left corner of the student's; the new channels get fresh random incoming
    weights but zero weights into the teacher's channels, so they change nothing until training moves them; each
    new resnet starts as the identity (its second convolution zeroed; resnets are ``x + F(x)``); attention queries
    of new channels are zero and the teacher's queries are scaled by ``sqrt(C_student / C_teacher)`` (the one-head
    attention divides by ``sqrt(C)``). GroupNorm groups keep the teacher's channels per group, so widths must be the
    teacher's times ``k`` and the student has ``k`` times the teacher's groups. The student's encoder therefore gives
    the teacher's latents exactly and its decoder starts where the teacher's decoder is."""
    t = teacher.config
    factors = {c // tc for c, tc in zip(channels, t.block_out_channels)}
    if len(factors) != 1 or any(c % tc for c, tc in zip(channels, t.block_out_channels)):
        raise ValueError(f"widths {tuple(channels)} must be one multiple of the teacher's {t.block_out_channels}")
    if layers < t.layers_per_block:
        raise ValueError(f"layers {layers} < the teacher's {t.layers_per_block}")
    torch.manual_seed(seed)
    student = build_wide_vae(teacher, channels, layers, norm_num_groups=t.norm_num_groups * factors.pop())
    theirs = teacher.state_dict()
    state = student.state_dict()
    for key, s in state.items():
        if key not in theirs:  # a resnet the teacher does not have: the identity
            if ".conv2." in key:
                s.zero_()
            continue
        w = theirs[key]
        if s.ndim >= 2:
            s[: w.shape[0], w.shape[1] :] = 0  # new inputs never reach the teacher's channels
            s[: w.shape[0], : w.shape[1]] = w
        else:
            s[: w.shape[0]] = w
        if ".to_q." in key:  # one attention head over C channels: logits / sqrt(C)
            s.mul_((s.shape[0] / w.shape[0]) ** 0.5)
            s[w.shape[0] :] = 0
    student.load_state_dict(state)
    return student


def decoder_loss(student: AutoencoderKL, teacher: AutoencoderKL, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The student decoder's reconstruction of ``x`` from the teacher's sampled latents (as the diffusion model's
    samples are drawn): L1 + MSE + patch colour (:mod:`zoo.vae`) + the gradient-difference term for outlines and
    glyph strokes."""
    with torch.no_grad():
        z = teacher.encode(x).latent_dist.sample()
    rec = student.decode(z).sample
    l1, mse = F.l1_loss(rec, x), F.mse_loss(rec, x)
    colour = F.l1_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
    edge = gradient_loss(rec, x)
    loss = l1 + mse + COLOUR_WEIGHT * colour + EDGE_WEIGHT * edge
    return loss, {"l1": l1, "mse": mse, "colour": colour, "edge": edge}


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
    checkpoint_every: int = 100,
    workers: int = 0,
) -> AutoencoderKL:
    """Grow ``teacher`` (:func:`grow_vae`) and train the student's decoder only (its encoder is the teacher's, frozen)
    on the world mix (``kinds`` weights; default :data:`zoo.data.VAE_MIX`, every render kind), rendered by
    ``workers`` processes when > 0 (a GPU trains faster than one process renders)."""
    student = grow_vae(teacher, channels, layers, seed=seed)
    student.requires_grad_(False)
    for m in (student.decoder, student.post_quant_conv):
        m.requires_grad_(True)
    teacher = teacher.eval().requires_grad_(False)
    dev = current_device()
    teacher.to(dev)
    batches = BatchRenderer(batch_size, seed, size, kinds or VAE_MIX, workers)

    def loss_fn(step: int):
        return decoder_loss(student, teacher, batches(step).to(dev))

    cfg = LoopConfig(out=out, steps=steps, lr=lr, warmup_steps=min(100, steps // 10 + 1), seed=seed, resume=resume,
                     checkpoint_every=checkpoint_every)  # fmt: skip
    try:
        return train_loop(student, loss_fn, cfg, name="vae-wide")
    finally:
        batches.close()


@torch.no_grad()
def latent_agreement(student: AutoencoderKL, teacher: AutoencoderKL, n: int = 64, size: int = 64, seed: int = 99):
    """``|mean_s - mean_t| / |mean_t|`` (relative L2) and the largest per-image value on ``n`` fresh renders."""
    x = to_batch(mixed_samples(n, seed, 0, size))
    ms, mt = student.encode(x).latent_dist.mean, teacher.encode(x).latent_dist.mean
    per = (ms - mt).flatten(1).norm(dim=1) / mt.flatten(1).norm(dim=1).clamp_min(1e-8)
    return {"latent_rel_err": float(per.mean()), "latent_rel_err_max": float(per.max())}
