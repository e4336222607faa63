"""controlnet_pp: ControlNet++ — a ControlNet fine-tuned with a pixel-space consistency reward (Li et al. 2024)."""

from tailor.core.control import CONTROL_INPUT, example_control_inputs
from tailor.core.method import MethodSpec
from tailor.methods.controlnet_pp.config import ControlNetPPConfig
from tailor.methods.controlnet_pp.method import ControlNetPPMethod

SPEC = MethodSpec(
    name="controlnet_pp",
    method=ControlNetPPMethod,
    config=ControlNetPPConfig,
    summary="fine-tune a ControlNet with a cycle-consistency reward on one-step x0 predictions (t <= 200)",
    paper="Li et al. 2024 (ControlNet++)",
    builds_on=("controlnet",),
    test_options={"condition": "hf", "reward_max_t": 1000},
    example_inputs=example_control_inputs,
    generate=CONTROL_INPUT,
)

__all__ = ["SPEC", "ControlNetPPConfig", "ControlNetPPMethod"]
