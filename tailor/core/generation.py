"""``GenerateConfig``: the one source of generation settings — ``Pipeline.generate``'s keywords, ``tailor
generate``'s flags (generated from these fields) and the ``settings`` of ``generation.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tailor.core.config import Config, option
from tailor.core.samplers import SAMPLERS

#: seeds are 64-bit (torch.Generator.manual_seed); image i of a run uses seed + i
MAX_SEED = 2**63 - 1


@dataclass
class GenerateConfig(Config):
    """Sampling settings of one generation call (attachments and prompts are separate)."""

    negative_prompt: str | list[str] | None = option(None, "Negative prompt.")
    n: int = option(1, "Images per prompt.", cli_default=4)
    seed: int = option(0, "Seed of the first image; image i uses seed + i.")
    steps: int = option(30, "Sampler steps.")
    guidance: float = option(7.5, "Classifier-free guidance scale (1 = off).")
    sampler: str | None = option("ddim", f"Sampler: {', '.join(SAMPLERS)} (None: the base's own).")
    width: int | None = option(None, "Width in pixels (default: the base's size).")
    height: int | None = option(None, "Height in pixels (default: the base's size).")
    eta: float = option(0.0, "DDIM eta (0 = deterministic).")
    init_image: str | None = option(
        None, "Start from this image (img2img; resized to the output size): how much is repainted is --strength."
    )
    mask: str | None = option(
        None,
        "Inpaint: repaint the white region of this mask (needs --init-image; black is kept). An inpainting base (9 "
        "input channels) is conditioned on it; a plain base blends latents.",
    )
    strength: float | None = option(
        None,
        "How much of the init image is repainted, in (0, 1]: the last int(steps * strength) steps run (default: 0.8 "
        "for img2img, 1.0 with --mask, as diffusers).",
    )
    keep_unmasked: int | None = option(
        None,
        "Inpaint: paste the init image back outside the mask after decoding, over a border blurred by this many "
        "pixels (0 = hard edge; A1111's mask blur + overlay). Default: off, the decoded latents as they are "
        "(diffusers).",
    )

    def validate(self) -> None:
        self.check(self.n >= 1 and self.steps >= 1, f"steps and n must be >= 1; got steps={self.steps}, n={self.n}.")
        self.check(0 <= self.seed <= MAX_SEED - self.n, f"seed must lie in 0..2**63-1-n; got {self.seed}.")
        for name in ("guidance", "eta"):
            value = getattr(self, name)
            self.check(math.isfinite(value), f"{name} must be a finite number; got {value}.")
        self.check(self.eta >= 0, f"eta must be >= 0; got {self.eta}.")
        if self.strength is not None:
            self.check(
                0.0 < self.strength <= 1.0,
                f"strength must lie in (0, 1] (how much of the init image is repainted); got {self.strength}.",
            )
        self.check(
            self.keep_unmasked is None or self.keep_unmasked >= 0,
            f"keep_unmasked is a blur in pixels and must be >= 0; got {self.keep_unmasked}.",
        )
        for name in ("width", "height"):
            value = getattr(self, name)
            self.check(value is None or value > 0, f"{name} must be a positive number of pixels; got {value}.")
        if self.sampler is not None:
            key = self.sampler.lower().replace("-", "_").replace("+", "p")
            self.check(key in SAMPLERS, f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
