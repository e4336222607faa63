"""photomaker: PhotoMaker (Li et al. 2023) — stacked ID embedding: reference images fused with the class word
replace it in the prompt (trigger word ``img``), LoRA on the UNet attention, text-only steps before the merge step."""

from __future__ import annotations

from tailor.core.image_prompt import MAX_SCALE
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input
from tailor.methods.photomaker.config import PhotoMakerConfig
from tailor.methods.photomaker.method import PhotoMakerMethod


def example_inputs(components) -> dict:
    """Two world renders of one identity as the reference images; the conformance prompt has no trigger word, so
    ``class_word`` puts it after "star" (mechanics only)."""
    import tailor.world as world

    return {"id_images": [world.render_face(s, identity=901).pil() for s in (3, 4)], "class_word": "star"}


SPEC = MethodSpec(
    name="photomaker",
    method=PhotoMakerMethod,
    config=PhotoMakerConfig,
    summary="identity: N reference images fused with the class word -> N stacked ID tokens ('a man img'), UNet LoRA",
    paper="Li et al. 2023, PhotoMaker: Customizing Realistic Human Photos via Stacked ID Embedding",
    test_options={"image_encoder": "tiny", "rank": 4, "lora_alpha": 4.0},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--photomaker",
        "PhotoMaker model (a path, or world: shipped) and its reference images (a folder or files); the "
        "--id-images when none is given; repeatable.",
        input=Input(
            "id_images", "paths", flag="--id-images", help="Reference images (a folder or files) for --photomaker."
        ),
        max_weight=MAX_SCALE,
        class_input="class_word",
    ),
    bench=(BenchRow("identity", "photomaker", 0, 0.0, note="zero-shot: the shipped world weights"),),
)

__all__ = ["SPEC", "PhotoMakerConfig", "PhotoMakerMethod"]
