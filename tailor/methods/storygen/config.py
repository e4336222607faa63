"""Options of StoryGen's context module (Liu et al., "Intelligent Grimm — Open-ended Visual Storytelling via Latent
Diffusion Models", CVPR 2024; official code github.com/haoningwu3639/StoryGen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

MAX_FRAMES = 3  # the paper and the official training script condition on at most 3 previous frames


@dataclass
class StoryGenConfig(Config):
    """Official defaults: up to 3 previous frames, each noised to ``t // ref_t_div * (n - i)`` (the oldest the
    noisiest), text guidance 7.5 (``--guidance``) and image guidance 3.5."""

    paper: ClassVar[str] = "Liu et al. 2024, Intelligent Grimm / StoryGen (CVPR), official repo haoningwu3639/StoryGen"

    max_frames: int = option(MAX_FRAMES, "previous frames the context module reads (older ones are dropped)")
    image_guidance: float = option(
        3.5, "image guidance scale s_img of the 3-way guidance: eps_u + s_img (eps_img - eps_u) + s_txt "
        "(eps_all - eps_img); 1 needs no extra UNet row"
    )  # fmt: skip
    ref_t_div: int = option(
        10, "a previous frame is noised to t // ref_t_div times its distance from the current frame"
    )
    noise_seed: int = option(0, "seed of the noise added to the previous frames (step i draws from seed + i)")
    frames_per_story: int = option(4, "training: frames of each world story (the target is frame 1..n-1)")

    def validate(self) -> None:
        self.check(1 <= self.max_frames <= 8, f"max_frames must lie in [1, 8]; got {self.max_frames}.")
        self.check(self.image_guidance >= 0, f"image_guidance must be >= 0; got {self.image_guidance}.")
        self.check(self.ref_t_div >= 1, f"ref_t_div must be >= 1; got {self.ref_t_div}.")
        self.check(
            2 <= self.frames_per_story <= 16, f"frames_per_story must lie in [2, 16]; got {self.frames_per_story}."
        )
