"""Options of IC-Light (Zhang, Rao, Agrawala, ICLR 2025: Scaling In-the-Wild Training for Diffusion-based Illumination
Harmonization and Editing by Imposing Consistent Light Transport)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class IcLightConfig(Config):
    """Which IC-Light model (fc: foreground; fbc: foreground + background) and its training options."""

    paper: ClassVar[str] = (
        "Zhang, Rao, Agrawala 2025, Scaling In-the-Wild Training for Diffusion-based Illumination Harmonization and "
        "Editing by Imposing Consistent Light Transport (IC-Light, ICLR 2025)"
    )

    mode: str = option(
        "fc",
        "fc: the UNet also sees the foreground's latents (8 input channels on SD); fbc: and the background's (12)",
        choices=("fc", "fbc"),
    )
    input_lr_scale: float = option(
        1.0,
        "learning-rate multiplier of conv_in (its new foreground / background input channels start at zero and, at "
        "the UNet's rate, take thousands of steps to matter; the world recipes use 10)",
    )
    consistency_weight: float = option(
        0.1, "weight of the light-transport consistency loss (training with lit pairs; 0 = off)"
    )

    unet_rank: int = option(
        0,
        "0: the whole UNet trains (the paper); R > 0: conv_in and every bias / norm train in full and every other "
        "weight as a rank-R LoRA delta (a compact file, tailor.core.unet_delta; loading materialises base + delta, "
        "the official offsets file stays the full delta)",
    )

    light_words: bool = option(
        True,
        "fc: every word of the prompt's light phrase (lit, the sides, the light colours, light / lamplight) reads "
        "through a trained input vector of its own, trained with the UNet (the world tokenizer spells several "
        "letter by letter; tailor/methods/ic_light/light_words.py); a file saved without them loads with it off",
    )
    light_words_lr_scale: float = option(
        10.0, "learning-rate multiplier of the light words' vectors (textual inversion's rate is ~10x the UNet's)"
    )

    @property
    def condition_images(self) -> int:
        """How many images' latents the UNet input carries besides the noisy latents."""
        return 1 if self.mode == "fc" else 2

    def validate(self) -> None:
        self.check(self.input_lr_scale > 0, f"input_lr_scale must be > 0; got {self.input_lr_scale}.")
        self.check(self.unet_rank >= 0, f"unet_rank must be >= 0 (0 = the whole UNet); got {self.unet_rank}.")
        scale = self.light_words_lr_scale
        self.check(scale > 0, f"light_words_lr_scale must be > 0; got {scale}.")
        self.check(self.consistency_weight >= 0, f"consistency_weight must be >= 0; got {self.consistency_weight}.")
