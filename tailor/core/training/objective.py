"""One micro-step of the diffusion objective, shared by training and the validation loss.

Reads top to bottom: draw the sample's randoms -> VAE posterior (cached or not) -> latents -> noised latents and
target -> prompt conditioning (cached or not, caption dropout) -> the method's ``encode`` hook -> ``step_kwargs``
-> UNet -> min-SNR weights -> the method's ``loss``. The method sees ``state.inputs`` = the batch plus the clean
``latents`` and the ``noise`` (reward and alignment losses need them). A method may first expand each batch item
into several rows with ``expand_batch(batch, keys, positions)`` (DreamBooth: the item's class image joins the batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tailor.core.conditioning import Conditioning, StepState
from tailor.core.latents import scale_latents
from tailor.core.method import Method
from tailor.core.pipeline import Attachment, call_unet, encode_with_methods, unet_kwargs
from tailor.core.prompts import encode_prompts
from tailor.core.training.config import TrainConfig
from tailor.core.training.noise import TIMESTEP_SAMPLERS, compute_snr, draw, min_snr_weights, training_target


@dataclass
class Objective:
    """The per-run constants of a micro-step: components, method, the run's options (``config``), caches.

    The noise schedule is the base's betas (a ``DDPMScheduler``) predicting ``config.prediction_type`` or, when it is
    None, the base scheduler's own prediction type."""

    components: Any
    method: Method
    config: TrainConfig  # seed, noise_offset, caption_dropout, min_snr_gamma, cache_latents, cache_text, ...
    resolution: int
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    prediction_type: str = field(init=False)
    noise_scheduler: Any = field(init=False)  # a DDPMScheduler with the base's betas
    attachment: Attachment = field(init=False)
    latent_cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    text_cache: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = field(default_factory=dict)

    def __post_init__(self):
        from diffusers import DDPMScheduler

        base = self.components.scheduler.config
        self.prediction_type = self.config.prediction_type or base.get("prediction_type", "epsilon")
        self.noise_scheduler = DDPMScheduler.from_config(base, prediction_type=self.prediction_type)
        self.attachment = Attachment(self.method)

    # ------------------------------------------------------------------ latents
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c = self.components
        h = self.resolution // c.vae_scale_factor
        return (int(c.vae.config.latent_channels), h, h)

    @torch.no_grad()
    def posterior(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the VAE posterior (float32)."""
        vae = self.components.vae
        dist = vae.encode(pixel_values.to(self.components.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def cached_posterior(self, pixel_values: torch.Tensor, keys: list[tuple[int, int]]):
        """The posterior of each sample, encoding only the ones not seen before (kept on the CPU)."""
        for i, k in enumerate(keys):
            if k not in self.latent_cache:
                # one image at a time: the cached value must not depend on the batch it first appeared in,
                # or a resumed run (empty cache) would differ from an uninterrupted one in the last bits
                mean, std = self.posterior(pixel_values[i : i + 1])
                self.latent_cache[k] = (mean[0].cpu(), std[0].cpu())
        device = self.components.device
        mean = torch.stack([self.latent_cache[k][0] for k in keys]).to(device)
        std = torch.stack([self.latent_cache[k][1] for k in keys]).to(device)
        return mean, std

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> diffusion latents (the inverse of the pipeline's ``decode``)."""
        return scale_latents(self.components.vae.config, latents)

    # ------------------------------------------------------------------ text
    def text(self, captions: list[str]) -> Conditioning:
        c, res = self.components, self.resolution
        if not self.config.cache_text:
            # each distinct caption once (a batch often repeats one: DreamBooth's "a sks dog", its class prompt)
            unique = list(dict.fromkeys(captions))
            with torch.set_grad_enabled(self.method.trains_text_encoder and torch.is_grad_enabled()):
                cond = encode_prompts(c, unique, cfg=False, height=res, width=res)
            if len(unique) == len(captions):
                return cond
            rows = torch.tensor([unique.index(p) for p in captions], device=cond.encoder_hidden_states.device)
            added = {k: v[rows] for k, v in (cond.added_cond_kwargs or {}).items()} or None
            hidden = cond.encoder_hidden_states[rows]
            return Conditioning(hidden, batch_size=len(captions), cfg=False, added_cond_kwargs=added, prompts=captions)
        missing = [p for p in dict.fromkeys(captions) if p not in self.text_cache]
        if missing:
            with torch.no_grad():
                cond = encode_prompts(c, missing, cfg=False, height=res, width=res)
            for i, p in enumerate(missing):
                added = {k: v[i] for k, v in (cond.added_cond_kwargs or {}).items()}
                self.text_cache[p] = (cond.encoder_hidden_states[i], added)
        rows = [self.text_cache[p] for p in captions]
        added = {k: torch.stack([r[1][k] for r in rows]) for k in rows[0][1]} or None
        hidden = torch.stack([r[0] for r in rows])
        return Conditioning(hidden, batch_size=len(captions), cfg=False, added_cond_kwargs=added, prompts=captions)

    # ------------------------------------------------------------------ the step
    def loss(
        self,
        batch: dict[str, Any],
        keys: list[tuple[int, int]],
        positions: list[int],
        stream: int,
        step: int,
        num_steps: int,
        dropout: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch; ``keys`` name the items (for the latent cache), ``positions`` their randoms."""
        # a method may turn each item into several rows (DreamBooth: instance + class image)
        batch, keys, positions = self.method.expand_batch(batch, keys, positions)
        device = self.components.device
        sched = self.noise_scheduler
        num_t = int(sched.config.num_train_timesteps)
        cfg = self.config
        dropout_p = cfg.caption_dropout if dropout else 0.0
        sampler = TIMESTEP_SAMPLERS.get(cfg.timestep_sampling, self.method.sample_timesteps)  # "method": its own
        d = draw(cfg.seed, stream, positions, self.latent_shape, num_t, sampler, cfg.noise_offset, dropout_p)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with self.autocast():
            if cfg.cache_latents:
                mean, std = self.cached_posterior(batch["pixel_values"], keys)
            else:
                mean, std = self.posterior(batch["pixel_values"])
            latents = self.scale_latents(mean + std * d.latent_eps.to(device))
            noise, t = d.noise.to(device), d.timesteps.to(device)
            noisy = sched.add_noise(latents, noise, t)
            target = training_target(sched, latents, noise, t, self.prediction_type)

            captions = ["" if drop else str(cap) for drop, cap in zip(d.drop_caption, batch["caption"])]
            cond = self.text(captions)
            inputs = {**batch, "latents": latents, "noise": noise}
            cond = encode_with_methods([self.attachment], cond, inputs)
            state = StepState(
                noisy,
                t,
                cond,
                step=step,
                num_steps=num_steps,
                fraction=step / max(num_steps, 1),
                training=True,
                inputs=inputs,
            )
            extra = unet_kwargs([self.attachment], state)
            pred = call_unet(self.components.unet, noisy, t, cond, extra)

            weights = None
            if cfg.min_snr_gamma is not None:
                snr = compute_snr(sched.alphas_cumprod, t)
                weights = min_snr_weights(snr, cfg.min_snr_gamma, self.prediction_type)
            loss, logs = self.method.loss(pred, target, state, weights)
        return loss, logs
