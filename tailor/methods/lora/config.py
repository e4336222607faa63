"""Options of LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") for diffusion models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option
from tailor.core.lora import TEXT_TARGETS, UNET_TARGETS


@dataclass
class LoRAConfig(Config):
    """Rank, alpha and which modules get LoRA layers."""

    paper: ClassVar[str] = "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models"

    rank: int = option(4, "LoRA rank r")
    alpha: float | None = option(None, "LoRA alpha; the update is scaled by alpha / rank (default: alpha = rank)")
    targets: list[str] = option(
        ["attention"], "UNet modules: attention (to_q/to_k/to_v/to_out.0), ff (feed-forward), proj (proj_in/out), conv"
    )
    train_text_encoder: bool = option(False, "also put LoRA layers into the text encoder(s) and train them")
    text_targets: list[str] = option(["attention"], "text-encoder modules: attention (q/k/v/out_proj), mlp (fc1/fc2)")
    dropout: float = option(0.0, "dropout on the LoRA branch input")
    init: str = option(
        "kaiming", "init of A (B starts at zero): kaiming (peft default) or gaussian", choices=("kaiming", "gaussian")
    )

    def validate(self) -> None:
        c = self.check
        c(self.rank >= 1, f"rank must be at least 1; got {self.rank}.")
        c(self.alpha is None or self.alpha > 0, f"alpha must be positive; got {self.alpha}.")
        c(0 <= self.dropout < 1, f"dropout must lie in [0, 1); got {self.dropout}.")
        c(bool(self.targets), "targets is empty; pass at least one of " + ", ".join(UNET_TARGETS) + ".")
        for t in self.targets:
            c(t in UNET_TARGETS, f"unknown UNet target {t!r}; use {', '.join(UNET_TARGETS)}.")
        for t in self.text_targets:
            c(t in TEXT_TARGETS, f"unknown text-encoder target {t!r}; use {', '.join(TEXT_TARGETS)}.")

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)
