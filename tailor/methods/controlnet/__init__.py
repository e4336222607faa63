"""controlnet: a trainable copy of the UNet encoder driven by a condition image (Zhang et al. 2023)."""

import torch

from tailor.core.method import MethodSpec
from tailor.methods.controlnet.config import ControlNetConfig
from tailor.methods.controlnet.method import ControlNetMethod


def _example_inputs(components) -> dict:
    size = components.default_size
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(1, 3, size, size, generator=g)}


SPEC = MethodSpec(
    name="controlnet",
    method=ControlNetMethod,
    config=ControlNetConfig,
    summary="trainable encoder copy + zero convs adding residuals from a condition image (canny, seg, hf, layout)",
    paper="Zhang et al. 2023 (ControlNet)",
    test_options={"condition": "canny"},
    example_inputs=_example_inputs,
)

__all__ = ["SPEC", "ControlNetConfig", "ControlNetMethod"]
