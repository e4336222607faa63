"""Options of ODGEN (Zhu et al. 2024, "ODGEN: Domain-specific Object Detection Data Generation with Diffusion
Models", arXiv 2405.15199)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class ODGENConfig(Config):
    """The image-list / text-list ControlNet, its foreground-weighted loss and how sampling makes the image list."""

    paper: ClassVar[str] = (
        "Zhu et al. 2024, ODGEN: Domain-specific Object Detection Data Generation with Diffusion Models "
        "(NeurIPS 2024, arXiv 2405.15199)"
    )

    conditioning_scale: float = option(1.0, "residual scale of the ControlNet (times the attachment weight)")
    max_objects: int = option(3, "N: canvases and text-list slots per image (padded; more objects are refused)")
    stem_width: int = option(16, "width of the trainable conv stem that encodes each canvas of the image list")
    text_width: int = option(128, "hidden width of the trainable text-list encoder (an MLP on each object's text)")
    fg_weight: float = option(
        2.0, "loss weight inside the object boxes (outside: 1); ODGEN's foreground region enhancement"
    )
    empty_prompts: float = option(0.5, "share of training samples whose global caption is replaced by '' (ControlNet)")
    plain_prompts: float = option(
        0.0, "training: share of the samples left with a caption whose caption loses its colour and pattern words "
        "(the class-only caption, relations kept), so the colours must come from the image list",
    )  # fmt: skip
    object_bank: str = option(
        "", "training: a .safetensors cache of base-generated object images, made on first use (object_steps steps, "
        "centre object_crop pasted, as at synthesis) and used as the image list; empty: the scene's own crops",
    )  # fmt: skip
    blur: float = option(1.0, "training: largest Gaussian sigma (px) applied to each image-list crop (generated "
                         "objects are softer than renders)")  # fmt: skip
    object_crop: float = option(
        0.6, "sampling: the centre fraction of each generated object image pasted into its box (the base draws one "
        "object in the middle, 44-72% of the side)",
    )  # fmt: skip
    list_guidance: bool = option(
        False, "sampling: the unconditional classifier-free-guidance half gets the empty list (no hint, null text "
        "tokens), so guidance pushes towards the image list as well as the caption",
    )  # fmt: skip
    object_steps: int = option(10, "sampling: denoising steps of the object images of the image list (small objects)")
    init: str = option(
        "none",
        "the ControlNet weights to start from: none (a copy of the UNet encoder), layout (the world's shipped layout "
        "ControlNet) or a ControlNet folder / file of the same base",
    )

    def validate(self) -> None:
        c = self.check
        c(self.conditioning_scale >= 0, f"conditioning_scale must be 0 or more; got {self.conditioning_scale}.")
        c(1 <= self.max_objects <= 16, f"max_objects must lie in 1..16; got {self.max_objects}.")
        c(4 <= self.stem_width <= 256, f"stem_width must lie in 4..256; got {self.stem_width}.")
        c(8 <= self.text_width <= 4096, f"text_width must lie in 8..4096; got {self.text_width}.")
        c(self.fg_weight >= 1, f"fg_weight must be 1 or more (1 = plain MSE); got {self.fg_weight}.")
        c(0 <= self.empty_prompts <= 1, f"empty_prompts must lie in [0, 1]; got {self.empty_prompts}.")
        c(0 <= self.plain_prompts <= 1, f"plain_prompts must lie in [0, 1]; got {self.plain_prompts}.")
        c(not self.object_bank or str(self.object_bank).endswith(".safetensors"),
          f"object_bank must be a .safetensors path (or empty); got {self.object_bank!r}.")  # fmt: skip
        c(0 <= self.blur <= 8, f"blur must lie in [0, 8]; got {self.blur}.")
        c(0.1 <= self.object_crop <= 1, f"object_crop must lie in [0.1, 1]; got {self.object_crop}.")
        c(1 <= self.object_steps <= 1000, f"object_steps must lie in 1..1000; got {self.object_steps}.")
        c(bool(str(self.init).strip()), "init must be none, layout or a ControlNet path.")
