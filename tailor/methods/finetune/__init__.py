"""finetune: full fine-tuning of the UNet (and optionally the text encoder) on image/caption pairs (LDM)."""

from tailor.core.method import MethodSpec
from tailor.methods.finetune.config import FinetuneConfig
from tailor.methods.finetune.method import FinetuneMethod

SPEC = MethodSpec(
    name="finetune",
    method=FinetuneMethod,
    config=FinetuneConfig,
    summary="full fine-tuning of the UNet (and optionally the text encoder) on image/caption pairs",
    paper="Rombach et al. 2022 (LDM)",
)

__all__ = ["SPEC", "FinetuneConfig", "FinetuneMethod"]
