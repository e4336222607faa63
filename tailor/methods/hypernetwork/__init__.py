"""hypernetwork: NovelAI/A1111 hypernetworks — per-width MLP pairs that rewrite the attention context for k and v."""

from tailor.core.method import MethodSpec
from tailor.methods.hypernetwork.config import HypernetworkConfig
from tailor.methods.hypernetwork.method import HypernetworkMethod

SPEC = MethodSpec(
    name="hypernetwork",
    method=HypernetworkMethod,
    config=HypernetworkConfig,
    summary="per-width MLP pairs that rewrite the context fed to to_k / to_v in every attention block (A1111 files)",
    paper="NovelAI 2022 hypernetworks (AUTOMATIC1111 implementation)",
)

__all__ = ["SPEC", "HypernetworkConfig", "HypernetworkMethod"]
