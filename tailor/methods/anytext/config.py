"""Options of AnyText (Tuo et al. 2023, "AnyText: Multilingual Visual Text Generation and Editing", ICLR 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class AnyTextConfig(Config):
    """The auxiliary latent module's glyph scale, the loss weights, the recognizer and the placeholder rule."""

    paper: ClassVar[str] = "Tuo et al. 2023, AnyText: Multilingual Visual Text Generation and Editing (ICLR 2024)"

    conditioning_scale: float = option(1.0, "residual scale of the ControlNet (multiplied by the attachment weight)")
    glyph_scale: int = option(2, "glyph image resolution over the image's (paper: 2, 1024-px glyphs for 512 px)")
    ocr_loss_weight: float = option(
        0.003, "weight of the OCR perceptual loss (paper's loss_alpha: 0.003; 0 turns it off)"
    )
    step_weight: bool = option(True, "weight the OCR perceptual loss by alpha-bar_t of the step (paper: yes)")
    masked_image_prob: float = option(
        0.5, "share of training items whose masked image keeps the picture outside the text (else all masked)"
    )
    text_embedding: bool = option(True, "the text-embedding module (off: the glyph / position ControlNet alone)")
    recognizer: str = option(
        "world",
        "the line recognizer's weights: world (the shipped AnyText's), a file (a recognizer or an anytext file), "
        "or random (tests only)",
    )
    missing_placeholder: str = option(
        "error",
        "a prompt without a placeholder (* or the quoted --text) for a line: error, or skip that line's embedding",
        choices=("error", "skip"),
    )
    max_lines: int = option(4, "text lines a training item may carry (more are dropped)")
    timesteps: str = option(
        "uniform",
        "training timesteps: uniform (paper), or cubic t = (1 - u^3) T (mean 3/4 T: more of the large t where the "
        "sample's layout, and so the glyphs' strokes, is decided; T2I-Adapter's sampling)",
        choices=("uniform", "cubic"),
    )

    def validate(self) -> None:
        c = self.check
        c(self.conditioning_scale >= 0, f"conditioning_scale must be 0 or more; got {self.conditioning_scale}.")
        c(self.glyph_scale in (1, 2, 4), f"glyph_scale must be 1, 2 or 4; got {self.glyph_scale}.")
        c(self.ocr_loss_weight >= 0, f"ocr_loss_weight must be 0 or more; got {self.ocr_loss_weight}.")
        c(0 <= self.masked_image_prob <= 1, f"masked_image_prob must lie in [0, 1]; got {self.masked_image_prob}.")
        c(bool(self.recognizer), "recognizer must name world, a file or random.")
        c(1 <= self.max_lines <= 16, f"max_lines must lie in 1..16; got {self.max_lines}.")
