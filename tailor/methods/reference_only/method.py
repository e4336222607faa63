"""Reference-only control (lllyasviel 2023, sd-webui-controlnet's reference preprocessors; diffusers' community
``stable_diffusion_reference`` pipeline): training-free, the base UNet itself reads a reference image.

Every sampling step, before the UNet call, the reference image's latent (VAE mean, resized to the output size) is
noised to the step's timestep with the step's scheduler and run through the same UNet in a *reference pass*
(:mod:`tailor.core.reference_bank`); the pass writes each transformer block's self-attention input (``attn``) and the
mean / variance of each block output (``adain``); the ordinary call then attends to ``[x; reference]`` in
self-attention and / or matches those statistics, the unconditional rows mixing in their own result by
``style_fidelity``. Several reference images concatenate their tokens (and average their statistics).

``reference_pass="both"`` reproduces the community pipeline (every UNet row, unconditional rows included, has a
reference row with its own text); the default ``"cond"`` runs one row per image with its prompt and lets both
guidance rows read it, halving the pass. Deviations from the community pipeline, both for reproducibility: the
reference latent is the VAE's mean (not a sample) and the reference noise of step ``i`` comes from
``noise_seed + i`` (not the sampling generator).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tailor.core.conditioning import StepExtras
from tailor.core.images import load_image
from tailor.core.latents import scale_latents
from tailor.core.method import Method
from tailor.core.reference_bank import ReferenceBank, ReferenceRows, noised, run_reference_pass
from tailor.errors import InputError
from tailor.methods.reference_only.config import ReferenceOnlyConfig

log = logging.getLogger("tailor")


def as_images(value: Any) -> list[Image.Image]:
    """``reference`` (a path, PIL image, HxWx3 uint8 array, or a list of those) -> RGB PIL images."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise InputError("reference is an empty list; pass at least one reference image.")
    out = []
    for item in items:
        if isinstance(item, str | Path):
            out.append(load_image(item))
        elif isinstance(item, Image.Image):
            out.append(item.convert("RGB"))
        elif isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[-1] == 3 and item.dtype == np.uint8:
            out.append(Image.fromarray(item))
        else:
            raise InputError(f"reference must be an image file, a PIL image or an HxWx3 uint8 array; got "
                             f"{type(item).__name__}.")  # fmt: skip
    return out


class ReferenceOnlyMethod(Method):
    """Attach with ``pipe.attach(ReferenceOnlyMethod(mode="attn+adain"), weight=1.0, reference=img)``."""

    name = "reference_only"
    config_cls = ReferenceOnlyConfig
    training_free = True

    def __init__(self, config: ReferenceOnlyConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.bank: ReferenceBank | None = None
        self._latents: dict[tuple, torch.Tensor] = {}
        self._warned: set[tuple] = set()

    # ------------------------------------------------------------------ attach / detach
    def attach(self, components) -> None:
        c = self.config
        self.bank = ReferenceBank(components.unet, reader="attn" if c.attn else None, adain=c.adain,
                                  style_fidelity=c.style_fidelity)  # fmt: skip
        self.bank.attach()

    def detach(self, components) -> None:
        if self.bank is not None:
            self.bank.detach()
        self.bank = None

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        if self.bank is not None:
            self.bank.scale = scale

    # ------------------------------------------------------------------ the reference pass
    def reference_latents(self, images: list[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """The references' VAE latents at ``size`` = (width, height), cached per image and size."""
        keys = tuple(hashlib.sha1(im.tobytes() + str(im.size).encode()).hexdigest() for im in images)
        key = (keys, size)
        if key not in self._latents:
            c = self.components
            pixels = []
            for im, k in zip(images, keys):
                if im.size != size:
                    if (k, size) not in self._warned:
                        self._warned.add((k, size))
                        log.warning("reference_only: the %dx%d reference is resized to the %dx%d output; give a "
                                    "reference of the output size to keep its framing.", *im.size, *size)  # fmt: skip
                    im = im.resize(size, Image.LANCZOS)  # the community pipeline's resampling
                arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
                pixels.append(torch.from_numpy(arr).permute(2, 0, 1))
            x = torch.stack(pixels).to(device=c.device, dtype=c.vae.dtype)
            with torch.no_grad():
                mean = c.vae.encode(x).latent_dist.mean
            self._latents = {key: scale_latents(c.vae.config, mean).to(c.dtype)}  # keep one size
        return self._latents[key]

    def _rows(self, state):
        """This step's reference rows: (noised latents, text, added kwargs, sampling rows they stand for, refs)."""
        reference = state.inputs.get("reference")
        if reference is None:
            raise InputError("reference_only needs a reference image: attach it with reference=IMAGE "
                             "(CLI: --reference-only IMG).")  # fmt: skip
        images = as_images(reference)
        c, cond = self.components, state.cond
        f = c.vae_scale_factor
        h, w = state.latents.shape[-2:]
        x0 = self.reference_latents(images, (w * f, h * f))
        refs, b = x0.shape[0], cond.batch_size
        gen = torch.Generator("cpu").manual_seed(int(self.config.noise_seed) + int(state.step))
        noise = torch.randn((refs * b, *x0.shape[1:]), generator=gen, dtype=x0.dtype).to(x0.device)
        x = noised(state.scheduler, x0.repeat_interleave(b, dim=0), noise, state.timestep)
        both = self.config.reference_pass == "both" and cond.cfg
        hidden, added = cond.encoder_hidden_states, cond.added_cond_kwargs
        rows = torch.arange(hidden.shape[0])  # the sampling rows the reference rows stand for
        if both:  # per reference: [x (uncond rows), x (cond rows)] with the whole batch's text
            x = torch.cat([torch.cat([xr, xr]) for xr in x.chunk(refs)])
        elif cond.cfg:  # one row per image: its prompt's text (the conditional half)
            hidden, rows = hidden[b:], rows[b:]
            added = {k: v[b:] for k, v in added.items()} if added else added
        if refs > 1:
            hidden = hidden.repeat(refs, 1, 1)
            added = {k: v.repeat(refs, *([1] * (v.ndim - 1))) for k, v in added.items()} if added else added
        self.bank.uncond_rows = b if cond.cfg else 0
        return x, hidden, added, rows.repeat(refs), refs

    def step_kwargs(self, state):
        """``reference_pass="fused"``: the reference rows run in front of the batch in the sampling call."""
        if self.bank is None or state.training or self.scale <= 0 or self.config.reference_pass != "fused":
            return None
        x, hidden, added, rows, refs = self._rows(state)
        return StepExtras(reference_rows=ReferenceRows(x, hidden, added, rows, [self.bank], refs))

    def before_unet(self, state) -> None:
        """``reference_pass="cond"`` / ``"both"``: a separate reference pass before the sampling call."""
        if self.bank is None or state.training or self.scale <= 0 or self.config.reference_pass == "fused":
            return
        x, hidden, added, rows, refs = self._rows(state)
        c = self.components
        run_reference_pass([self.bank], c.unet, x, state.timestep, hidden, added,
                           state.cond.cross_attention_kwargs or None, groups=refs, rows=rows)  # fmt: skip
