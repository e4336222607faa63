"""hypernetwork: NovelAI/A1111 hypernetworks — per-width MLP pairs that rewrite the attention context for k and v."""

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.methods.hypernetwork.config import HypernetworkConfig
from tailor.methods.hypernetwork.method import HypernetworkMethod

SPEC = MethodSpec(
    name="hypernetwork",
    method=HypernetworkMethod,
    config=HypernetworkConfig,
    summary="per-width MLP pairs that rewrite the context fed to to_k / to_v in every attention block (A1111 files)",
    paper="NovelAI 2022 hypernetworks (AUTOMATIC1111 implementation)",
    generate=GenerateInput(
        "--hypernetwork",
        "Hypernetwork file (A1111 .pt or tailor); the weight is its strength; repeatable.",
        tag="hypernet",
        dir_flag="--hypernetwork-dir",
    ),
    bench=(BenchRow("personalize", "hypernetwork", 120, 2e-3, note="layer structure 1,2,1, linear; A1111 lr 1e-5"),),
)

__all__ = ["SPEC", "HypernetworkConfig", "HypernetworkMethod"]
