"""Options of the reference-UNet try-on method (Choi et al. 2024, IDM-VTON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

LORA_GROUPS = ("attention", "ff", "proj", "conv")


@dataclass
class RefUnetConfig(Config):
    """The try-on UNet (13 input channels, low-rank fine-tune), its frozen reference UNet and IP-Adapter-Plus."""

    paper: ClassVar[str] = (
        "Choi, Kwak, Lee, Kim, Shin 2024, Improving Diffusion Models for Authentic Virtual Try-on in the Wild "
        "(IDM-VTON, ECCV 2024): TryonNet (conv_in widened to noisy + mask + masked image + DensePose latents, "
        "IP-Adapter-Plus of the garment) reads GarmentNet's (a frozen UNet on the clean garment latent at the same "
        "t) self-attention inputs; the output is cropped back to the main token count"
    )

    reference_unet: bool = option(
        True,
        "run the frozen reference UNet on the reference latent and concatenate its self-attention inputs into the "
        "try-on UNet's self-attention (False: inpainting + IP-Adapter only, the paper's ablation)",
    )
    rank: int = option(16, "rank of the low-rank update of the try-on UNet (conv_in trains in full)")
    lora_targets: list[str] = option(
        ["attention", "proj", "ff"], f"try-on UNet modules with a low-rank update: {', '.join(LORA_GROUPS)}"
    )
    input_lr_scale: float = option(
        10.0, "learning-rate multiplier of conv_in (its 9 new input channels start at zero)"
    )
    ip_adapter: str = option(
        "world-plus",
        "IP-Adapter-Plus whose tokens of the reference join the cross-attention (a path or shipped name, frozen; "
        "'' = none)",
    )
    ip_scale: float = option(1.0, "scale of the IP-Adapter tokens")
    mask_margin: int = option(3, "training / bench masks: the object's box grown by this many pixels (a coarse "
                                 "'agnostic' mask, as try-on masks are)")  # fmt: skip

    def validate(self) -> None:
        self.check(self.rank >= 1, f"rank must be >= 1; got {self.rank}.")
        bad = [g for g in self.lora_targets if g not in LORA_GROUPS]
        self.check(not bad, f"lora_targets {bad} unknown; choose from {', '.join(LORA_GROUPS)}.")
        self.check(bool(self.lora_targets), "lora_targets is empty; name at least one of " + ", ".join(LORA_GROUPS))
        self.check(self.input_lr_scale > 0, f"input_lr_scale must be > 0; got {self.input_lr_scale}.")
        self.check(0 <= self.ip_scale <= 5, f"ip_scale must lie in [0, 5]; got {self.ip_scale}.")
        self.check(self.mask_margin >= 0, f"mask_margin must be >= 0; got {self.mask_margin}.")
