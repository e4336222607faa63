"""Options of PhotoMaker (Li et al. 2023, *PhotoMaker: Customizing Realistic Human Photos via Stacked ID
Embedding*): the image encoder, the trigger word, the LoRA on the UNet's attention and the start-merge step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class PhotoMakerConfig(Config):
    """Paper / release defaults: trigger word ``img`` after the class word, one ID token per reference image, LoRA on
    the UNet attention (release: rank 64), text-only embeddings for the first 10 of 50 steps (``merge_start`` 0.2)."""

    paper: ClassVar[str] = "Li et al. 2023, PhotoMaker (arXiv:2312.04461)"

    image_encoder: str = option(
        "world",
        "CLIPVisionModelWithProjection: 'world' (the zoo's vision tower), 'tiny' (tests), a local folder, or 'file' "
        "(the vision tower inside a PhotoMaker release file)",
    )
    vision_heads: int = option(0, "attention heads of a release file's vision tower (0 = width / 64, ViT-L/14's 16)")
    trigger_word: str = option("img", "the trigger word; it follows the class word in the prompt ('a man img')")
    rank: int = option(64, "LoRA rank on the UNet attention (to_q, to_k, to_v, to_out)")
    lora_alpha: float = option(64.0, "LoRA alpha (scale = alpha / rank)")
    merge_start: float = option(0.2, "fraction of the steps sampled with text-only embeddings before the ID ones")
    min_images: int = option(1, "fewest reference images a generation accepts")

    def validate(self) -> None:
        c = self.check
        c(bool(self.trigger_word.strip()) and " " not in self.trigger_word.strip(),
          f"trigger_word must be one word; got {self.trigger_word!r}.")  # fmt: skip
        c(self.rank >= 1, f"rank must be at least 1; got {self.rank}.")
        c(self.lora_alpha > 0, f"lora_alpha must be positive; got {self.lora_alpha}.")
        c(0.0 <= self.merge_start < 1.0, f"merge_start must lie in [0, 1); got {self.merge_start}.")
        c(
            self.image_encoder != "file" or self.lora_alpha == self.rank,
            f"the release layout (image_encoder 'file') has no LoRA alphas: lora_alpha must equal rank ({self.rank}).",
        )
        c(self.min_images >= 1, f"min_images must be at least 1; got {self.min_images}.")
