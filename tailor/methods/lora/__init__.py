"""lora: low-rank adapters on the UNet attention (and optionally text encoder, MLP, conv) (Hu et al. 2021)."""

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.methods.lora.config import LoRAConfig
from tailor.methods.lora.method import LoRAMethod

SPEC = MethodSpec(
    name="lora",
    method=LoRAMethod,
    config=LoRAConfig,
    summary="low-rank adapters on the UNet attention (optionally text encoder, MLP, conv); kohya/diffusers files",
    paper="Hu et al. 2021 (LoRA)",
    test_options={"rank": 2},
    generate=GenerateInput(
        "--lora",
        "LoRA file (tailor, kohya / A1111 or diffusers) or a training --out folder; repeatable.",
        tag="lora",
        dir_flag="--lora-dir",
    ),
    bench=(
        BenchRow("personalize", "lora", 120, 1e-3, note="attention LoRA; SD DreamBooth-LoRA lr 1e-4 x 500-1500 steps"),
    ),
)

__all__ = ["SPEC", "LoRAConfig", "LoRAMethod"]
