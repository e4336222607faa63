"""Options of plain text-to-image fine-tuning (Rombach et al. 2022, the LDM objective on new image/caption pairs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class FinetuneConfig(Config):
    """Which weights of the base are trained."""

    paper: ClassVar[str] = "Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models"

    train_text_encoder: bool = option(False, "also train the text encoder(s)")
    text_encoder_lr: float | None = option(
        None,
        "learning rate of the text encoder(s) (kohya's --text_encoder_lr; default: --lr; 0 keeps them as they are "
        "while they stay part of the saved weights)",
    )
    unet_params: str = option(
        "all",
        "UNet weights to train: all, attention (every attention block) or cross_attention (attn2 only)",
        choices=("all", "attention", "cross_attention"),
    )

    def validate(self) -> None:
        lr = self.text_encoder_lr
        self.check(lr is None or lr >= 0, f"text_encoder_lr must be >= 0; got {lr}.")
        self.check(
            lr is None or self.train_text_encoder,
            "text_encoder_lr needs train_text_encoder (the text encoder is not trained otherwise).",
        )
