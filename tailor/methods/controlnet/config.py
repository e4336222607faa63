"""Options of ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.conditions import KINDS
from tailor.core.config import Config, option


@dataclass
class ControlNetConfig(Config):
    """Condition kind, conditioning scale, guess mode and the share of empty prompts in training."""

    paper: ClassVar[str] = "Zhang et al. 2023, Adding Conditional Control to Text-to-Image Diffusion Models"

    condition: str = option("canny", "condition image kind", choices=tuple(KINDS))
    conditioning_scale: float = option(1.0, "residual scale (multiplied by the attachment weight)")
    guess_mode: bool = option(
        False, "guess mode: residuals scaled by logspace(-1, 0, n) and no control on the unconditional CFG half"
    )
    empty_prompts: float = option(0.5, "share of training samples whose caption is replaced by '' (paper: 50%)")

    def validate(self) -> None:
        c = self.check
        c(self.conditioning_scale >= 0, f"conditioning_scale must be 0 or more; got {self.conditioning_scale}.")
        c(0 <= self.empty_prompts <= 1, f"empty_prompts must lie in [0, 1]; got {self.empty_prompts}.")
