"""Options of PhotoVerse (Chen et al. 2023, *PhotoVerse: Tuning-Free Image Customization with Text-to-Image Diffusion
Models*, arXiv:2309.05793; no code released): the image encoder and its layers, the two adapters (pseudo-word, image
tokens), the LoRA on the cross-attention keys / values, the loss weights and the optional test-time tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

MAX_SCALE = 5.0


@dataclass
class PhotoVerseConfig(Config):
    """The paper: multi-layer CLIP image features of the face -> a text adapter (a pseudo-word ``S*`` in the text
    encoder's input) and an image adapter (tokens of a parallel image cross-attention); LoRA on the cross-attention
    K / V; loss = diffusion + lambda_face x (1 - cos) of face-recognition embeddings of the predicted clean image and
    the reference + regularisation of the pseudo-word and of the image-branch values; one photo, no test-time tuning.
    [? the loss weights: the paper's text, not checked against code (none released): face 0.01, word 0.01, values
    0.001.] ``tune_steps`` > 0 adds what the paper leaves out: a few LoRA steps on the one reference at sampling."""

    paper: ClassVar[str] = "Chen et al. 2023, PhotoVerse (arXiv:2309.05793)"

    image_encoder: str = option("world", "CLIPVisionModelWithProjection: 'world', 'tiny' (tests) or a local folder")
    vision_layers: list[int] = option([], "hidden states whose class token the adapters read (default: every layer)")
    adapter_width: int = option(128, "hidden width of the two adapters")
    image_tokens: int = option(4, "tokens of the image branch (the image adapter's output)")
    placeholder: str = option("S", "the pseudo-word's placeholder (one token); it goes before the class word")
    rank: int = option(4, "LoRA rank on the cross-attention keys / values (text and image branch)")
    lora_alpha: float = option(4.0, "LoRA alpha (scale = alpha / rank)")
    image_scale: float = option(1.0, "scale of the image cross-attention at sampling (times the attachment weight)")
    face_loss: float = option(0.01, "weight of the face-ID loss on the predicted clean image (conditioning embedder)")
    reg_word: float = option(0.01, "weight of the mean |pseudo-word| regularisation")
    reg_values: float = option(0.001, "weight of the mean |image-branch value| regularisation")
    face_embedder: str = option("world", "face embedder of the face-ID loss: 'world' or a world face-model file")
    tune_steps: int = option(0, "test-time LoRA steps on the reference before sampling (0: the paper, tuning-free)")
    tune_lr: float = option(2e-3, "learning rate of the test-time tuning")
    tune_batch: int = option(4, "noised copies of the reference per test-time step")

    def validate(self) -> None:
        c = self.check
        c(bool(str(self.image_encoder).strip()), "image_encoder is empty; pass 'world' or an image-encoder folder.")
        c(self.adapter_width >= 1, f"adapter_width must be positive; got {self.adapter_width}.")
        c(self.image_tokens >= 1, f"image_tokens must be at least 1; got {self.image_tokens}.")
        c(bool(self.placeholder.strip()) and " " not in self.placeholder.strip(),
          f"placeholder must be one word; got {self.placeholder!r}.")  # fmt: skip
        c(self.rank >= 1 and self.lora_alpha > 0, f"rank must be >= 1 and lora_alpha > 0; got {self.rank}, "
          f"{self.lora_alpha}.")  # fmt: skip
        c(0.0 <= self.image_scale <= MAX_SCALE, f"image_scale must lie in [0, {MAX_SCALE:g}]; got {self.image_scale}.")
        for name in ("face_loss", "reg_word", "reg_values"):
            c(getattr(self, name) >= 0, f"{name} must be 0 or more; got {getattr(self, name)}.")
        c(0 <= self.tune_steps <= 1000, f"tune_steps must lie in [0, 1000]; got {self.tune_steps}.")
        c(self.tune_lr > 0 and self.tune_batch >= 1, "tune_lr must be positive and tune_batch at least 1.")
