"""pulid: PuLID (Guo et al. 2024) — face-embedding ID tokens in decoupled cross-attention, trained with the diffusion
loss plus contrastive alignment (ID path vs text-only path) and an ID loss on a fast-sampled image."""

from __future__ import annotations

from tailor.core.image_prompt import MAX_SCALE
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.faces.id_adapter import FACE_INPUT
from tailor.methods.pulid.config import PuLIDConfig
from tailor.methods.pulid.method import PuLIDMethod


def example_inputs(components) -> dict:
    import tailor.world as world

    return {"face": world.render_face(3, identity=901).pil()}


SPEC = MethodSpec(
    name="pulid",
    method=PuLIDMethod,
    config=PuLIDConfig,
    summary="identity: face-embedding ID tokens (decoupled attention) trained with alignment + ID losses",
    paper="Guo et al. 2024, PuLID: Pure and Lightning ID Customization via Contrastive Alignment",
    builds_on=("ip_adapter",),
    test_options={"num_tokens": 4, "id_steps": 2},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--pulid",
        "PuLID model (a path, or world: shipped) and its reference face(s); the --face images when none is given; "
        "repeatable.",
        input=FACE_INPUT,
        max_weight=MAX_SCALE,
    ),
    bench=(BenchRow("identity", "pulid", 0, 0.0, note="zero-shot: the shipped world weights"),),
)

__all__ = ["SPEC", "PuLIDConfig", "PuLIDMethod"]
