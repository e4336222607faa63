"""controlnet: a trainable copy of the UNet encoder driven by a condition image (Zhang et al. 2023)."""

from tailor.core.control import CONTROL_INPUT, example_control_inputs
from tailor.core.method import MethodSpec
from tailor.methods.controlnet.config import ControlNetConfig
from tailor.methods.controlnet.method import ControlNetMethod

SPEC = MethodSpec(
    name="controlnet",
    method=ControlNetMethod,
    config=ControlNetConfig,
    summary="trainable encoder copy + zero convs adding residuals from a condition image (canny, seg, hf, layout)",
    paper="Zhang et al. 2023 (ControlNet)",
    test_options={"condition": "canny"},
    example_inputs=example_control_inputs,
    generate=CONTROL_INPUT,
)

__all__ = ["SPEC", "ControlNetConfig", "ControlNetMethod"]
