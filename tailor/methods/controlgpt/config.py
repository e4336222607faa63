"""Options of Control-GPT (Zhang et al. 2023, "Controllable Text-to-Image Generation with GPT-4")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class ControlGPTConfig(Config):
    """The sketch ControlNet's scale and init, the grounding tokens and the caption dropout of training."""

    paper: ClassVar[str] = "Zhang et al. 2023, Controllable Text-to-Image Generation with GPT-4 (arXiv 2305.18583)"

    conditioning_scale: float = option(1.0, "residual scale of the sketch ControlNet (times the attachment weight)")
    grounding: bool = option(
        True, "grounding tokens {object name, box} in the ControlNet's context (off: sketch only)"
    )
    max_objects: int = option(3, "grounding tokens per image (objects beyond are refused; padding uses a null token)")
    fourier_freqs: int = option(8, "Fourier frequencies of each box coordinate (GLIGEN's box embedding: 8)")
    grounding_width: int = option(128, "hidden width of the grounding projection MLP")
    empty_prompts: float = option(0.5, "share of training samples whose caption is replaced by '' (ControlNet: 50%)")
    plain_prompts: float = option(
        0.0,
        "share of the non-empty training captions replaced by the class-only caption (colour and pattern words "
        "removed, relations kept), so that colours must come from the grounding names (ODGEN's plain_prompts)",
    )
    pattern_dropout: float = option(
        0.5, "share of training objects whose grounding name omits the pattern word ('red star' vs 'red plain star')"
    )
    grounding_guidance: bool = option(
        False,
        "sampling: the unconditional CFG half gets null grounding tokens (no objects), so classifier-free guidance "
        "pushes towards the grounding names as it does towards the caption (ODGEN's list guidance)",
    )
    init: str = option(
        "none",
        "the ControlNet weights to start from: none (a copy of the UNet encoder, as ControlNet), layout (the "
        "world's shipped layout ControlNet), or a ControlNet folder / file of the same base",
    )

    def validate(self) -> None:
        c = self.check
        c(self.conditioning_scale >= 0, f"conditioning_scale must be 0 or more; got {self.conditioning_scale}.")
        c(1 <= self.max_objects <= 16, f"max_objects must lie in 1..16; got {self.max_objects}.")
        c(1 <= self.fourier_freqs <= 32, f"fourier_freqs must lie in 1..32; got {self.fourier_freqs}.")
        c(8 <= self.grounding_width <= 4096, f"grounding_width must lie in 8..4096; got {self.grounding_width}.")
        c(0 <= self.empty_prompts <= 1, f"empty_prompts must lie in [0, 1]; got {self.empty_prompts}.")
        c(0 <= self.plain_prompts <= 1, f"plain_prompts must lie in [0, 1]; got {self.plain_prompts}.")
        c(0 <= self.pattern_dropout <= 1, f"pattern_dropout must lie in [0, 1]; got {self.pattern_dropout}.")
        c(bool(str(self.init).strip()), "init must be none, layout or a ControlNet path.")
