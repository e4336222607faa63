"""t2i_adapter: a small encoder of the condition image whose features are added inside the UNet encoder (Mou et al.
2023)."""

from tailor.core.control import CONTROL_INPUT, example_control_inputs
from tailor.core.method import MethodSpec
from tailor.methods.t2i_adapter.config import T2IAdapterConfig
from tailor.methods.t2i_adapter.method import T2IAdapterMethod

SPEC = MethodSpec(
    name="t2i_adapter",
    method=T2IAdapterMethod,
    config=T2IAdapterConfig,
    summary="light condition encoder whose features are added to the UNet encoder levels (down_intrablock residuals)",
    paper="Mou et al. 2023 (T2I-Adapter)",
    test_options={"condition": "canny", "num_res_blocks": 1},
    example_inputs=example_control_inputs,
    generate=CONTROL_INPUT,
)

__all__ = ["SPEC", "T2IAdapterConfig", "T2IAdapterMethod"]
