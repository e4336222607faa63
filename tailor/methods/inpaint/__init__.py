"""inpaint: make a base a 9-channel inpainting base by continued training (Rombach et al. 2022, SD-inpainting)."""

from tailor.core.method import MethodSpec
from tailor.methods.inpaint.config import InpaintConfig
from tailor.methods.inpaint.method import InpaintMethod

SPEC = MethodSpec(
    name="inpaint",
    method=InpaintMethod,
    config=InpaintConfig,
    summary="inpainting base by continued training: conv_in widened to mask + masked-image latents, random masks",
    paper="Rombach et al. 2022 (SD-inpainting); masks as LaMa (Suvorov et al. 2022)",
    builds_on=("finetune",),
)

__all__ = ["SPEC", "InpaintConfig", "InpaintMethod"]
