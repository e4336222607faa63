"""lora: low-rank adapters on the UNet attention (and optionally text encoder, MLP, conv) (Hu et al. 2021)."""

from tailor.core.method import MethodSpec
from tailor.methods.lora.config import LoRAConfig
from tailor.methods.lora.method import LoRAMethod

SPEC = MethodSpec(
    name="lora",
    method=LoRAMethod,
    config=LoRAConfig,
    summary="low-rank adapters on the UNet attention (optionally text encoder, MLP, conv); kohya/diffusers files",
    paper="Hu et al. 2021 (LoRA)",
    test_options={"rank": 2},
)

__all__ = ["SPEC", "LoRAConfig", "LoRAMethod"]
