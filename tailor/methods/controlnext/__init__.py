"""controlnext: a light conv control module added once inside the UNet with cross normalization (Peng et al. 2024)."""

from tailor.core.control import CONTROL_INPUT, example_control_inputs
from tailor.core.method import MethodSpec
from tailor.methods.controlnext.config import ControlNeXtConfig
from tailor.methods.controlnext.method import ControlNeXtMethod

SPEC = MethodSpec(
    name="controlnext",
    method=ControlNeXtMethod,
    config=ControlNeXtConfig,
    summary="light conv module whose cross-normalized output is added after the UNet's first down block",
    paper="Peng et al. 2024 (ControlNeXt)",
    test_options={"condition": "canny"},
    example_inputs=example_control_inputs,
    generate=CONTROL_INPUT,
)

__all__ = ["SPEC", "ControlNeXtConfig", "ControlNeXtMethod"]
