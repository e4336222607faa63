"""controlnext: a light conv control module added once inside the UNet with cross normalization (Peng et al. 2024)."""

import torch

from tailor.core.method import MethodSpec
from tailor.methods.controlnext.config import ControlNeXtConfig
from tailor.methods.controlnext.method import ControlNeXtMethod


def _example_inputs(components) -> dict:
    size = components.default_size
    return {"image": torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))}


SPEC = MethodSpec(
    name="controlnext",
    method=ControlNeXtMethod,
    config=ControlNeXtConfig,
    summary="light conv module whose cross-normalized output is added after the UNet's first down block",
    paper="Peng et al. 2024 (ControlNeXt)",
    test_options={"condition": "canny"},
    example_inputs=_example_inputs,
)

__all__ = ["SPEC", "ControlNeXtConfig", "ControlNeXtMethod"]
