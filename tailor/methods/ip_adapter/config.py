"""Options of IP-Adapter (Ye et al. 2023, *IP-Adapter: Text Compatible Image Prompt Adapter for Text-to-Image
Diffusion Models*): image encoder, projection kind (4-token linear or the Plus resampler), scale and the training
drop probabilities (and, for Plus, the resampler's width, heads and depth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import option
from tailor.core.image_prompt import MAX_SCALE, ImagePromptConfig
from tailor.core.resampler import check_options


@dataclass
class IPAdapterConfig(ImagePromptConfig):
    """Paper defaults: 4 tokens (Plus: 16 resampler queries), scale 1.0 image-only (~0.5 with a text prompt), drop
    text / image / both with p = 0.05 each; train with AdamW lr 1e-4 and weight decay 0.01 (``--weight-decay``)."""

    paper: ClassVar[str] = "Ye et al. 2023, IP-Adapter (arXiv:2308.06721)"

    image_encoder: str = option(
        "world", "CLIPVisionModelWithProjection: 'world' (the zoo's vision tower), 'tiny' (tests) or a local folder"
    )
    plus: bool = option(False, "IP-Adapter-Plus: Perceiver resampler on the encoder's penultimate hidden states")
    num_tokens: int = option(0, "image tokens (0 = the paper's: 4, Plus 16; diffusers' loader assumes 4 for plain)")
    resampler_width: int = option(0, "Plus: resampler hidden width (0 = the base's cross-attention width; SDXL 1280)")
    resampler_heads: int = option(0, "Plus: resampler attention heads of 64 (0 = resampler width / 64)")
    resampler_depth: int = option(4, "Plus: resampler layers (the paper's 4; diffusers' loader reads only 4)")
    scale: float = option(1.0, "image-prompt scale (1.0 image only, ~0.5 together with a text prompt)")
    block_scales: list[float] = option([], "per cross-attention layer scale factors, in UNet order (default: all 1)")
    drop_text: float = option(0.05, "training: probability of dropping only the text (empty prompt)")
    drop_image: float = option(0.05, "training: probability of dropping only the image (zero image embedding)")
    drop_both: float = option(0.05, "training: probability of dropping text and image together")

    def validate(self) -> None:
        c = self.check
        c(bool(str(self.image_encoder).strip()), "image_encoder is empty; pass 'world' or an image-encoder folder.")
        c(self.num_tokens >= 0, f"num_tokens must be 0 (the default) or positive; got {self.num_tokens}.")
        check_options(self)  # resampler width, heads, depth
        super().validate()  # scale in [0, MAX_SCALE]
        c(all(0.0 <= s <= MAX_SCALE for s in self.block_scales),
          f"block_scales must lie in [0, {MAX_SCALE:g}]; got {self.block_scales}.")  # fmt: skip
        probs = (self.drop_text, self.drop_image, self.drop_both)
        c(all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0,
          f"drop_text, drop_image and drop_both must lie in [0, 1] and sum to at most 1; got {probs}.")  # fmt: skip

    @property
    def tokens(self) -> int:
        return self.num_tokens or (16 if self.plus else 4)
