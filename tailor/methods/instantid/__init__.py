"""instantid: InstantID (Wang et al. 2024) — face embedding -> Resampler ID tokens in decoupled cross-attention,
plus IdentityNet (a ControlNet on the 5 face keypoints, conditioned on the ID tokens instead of the text)."""

from __future__ import annotations

from tailor.core.image_prompt import MAX_SCALE
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.faces.id_adapter import FACE_INPUT
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
    generate=GenerateInput(
        "--instantid",
        "InstantID model (a training --out folder, an official folder, or world: shipped) and its reference "
        "face(s); the --face images when none is given; repeatable.",
        input=FACE_INPUT,
        max_weight=MAX_SCALE,
    ),
    bench=(BenchRow("identity", "instantid", 0, 0.0, note="zero-shot: the shipped world weights"),),
)

__all__ = ["SPEC", "InstantIDConfig", "InstantIDMethod"]
