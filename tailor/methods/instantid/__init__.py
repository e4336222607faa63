"""instantid: InstantID (Wang et al. 2024) — face embedding -> Resampler ID tokens in decoupled cross-attention,
plus IdentityNet (a ControlNet on the 5 face keypoints, conditioned on the ID tokens instead of the text)."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.methods.instantid.config import InstantIDConfig
from tailor.methods.instantid.method import InstantIDMethod


def example_inputs(components) -> dict:
    """A world face render as the reference (its keypoints come from the detector: no labels.json beside it)."""
    import tailor.world as world

    return {"face": world.render_face(3, identity=901).pil()}


SPEC = MethodSpec(
    name="instantid",
    method=InstantIDMethod,
    config=InstantIDConfig,
    summary="identity: face embedding -> 16 Resampler tokens (decoupled attention) + IdentityNet on 5 face keypoints",
    paper="Wang et al. 2024, InstantID: Zero-shot Identity-Preserving Generation in Seconds",
    builds_on=("ip_adapter", "controlnet"),
    test_options={"num_tokens": 4},
    example_inputs=example_inputs,
)

__all__ = ["SPEC", "InstantIDConfig", "InstantIDMethod"]
