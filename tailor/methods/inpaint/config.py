"""Options of inpainting training (Rombach et al. 2022's SD-inpainting recipe; masks as LaMa, Suvorov et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

MASK_KINDS = ("box", "ellipse", "strokes")


@dataclass
class InpaintConfig(Config):
    """How the training masks are drawn and which UNet weights train."""

    paper: ClassVar[str] = (
        "Rombach et al. 2022, High-Resolution Image Synthesis with Latent Diffusion Models (SD-inpainting: 5 extra "
        "zero-initialised input channels, synthetic masks, 25% of them the whole image); masks: Suvorov et al. 2022, "
        "LaMa (boxes and thick strokes)"
    )

    full_mask_prob: float = option(
        0.25, "share of training masks that cover the whole image (keeps text-to-image; SD-inpainting: 25%)"
    )
    mask_kinds: list[str] = option(
        list(MASK_KINDS), f"random mask shapes, drawn uniformly: {', '.join(MASK_KINDS)} (LaMa-style thick strokes)"
    )
    max_shapes: int = option(3, "at most this many boxes / ellipses / strokes in one mask")
    unet_params: str = option(
        "all",
        "UNet weights to train: all (SD-inpainting), attention or cross_attention (conv_in always trains)",
        choices=("all", "attention", "cross_attention"),
    )
    unet_rank: int = option(
        0,
        "0: the UNet weights --unet-params names train in full (SD-inpainting); R > 0: conv_in and every bias / norm "
        "in full, every other weight as a rank-R LoRA delta (a compact file, tailor.core.unet_delta; loading "
        "materialises base + delta, pipeline/ stays the full inpainting UNet)",
    )

    def validate(self) -> None:
        self.check(self.unet_rank >= 0, f"unet_rank must be >= 0 (0 = full weights); got {self.unet_rank}.")
        self.check(
            self.unet_rank == 0 or self.unet_params == "all",
            "unet_rank applies to the whole UNet; leave unet_params at all with it.",
        )
        p = self.full_mask_prob
        self.check(0.0 <= p <= 1.0, f"full_mask_prob must lie in [0, 1]; got {p}.")
        bad = [k for k in self.mask_kinds if k not in MASK_KINDS]
        self.check(not bad, f"mask_kinds {bad} unknown; choose from {', '.join(MASK_KINDS)}.")
        self.check(
            bool(self.mask_kinds) or p == 1.0, "mask_kinds is empty; name at least one of box, ellipse, strokes."
        )
        self.check(self.max_shapes >= 1, f"max_shapes must be >= 1; got {self.max_shapes}.")
