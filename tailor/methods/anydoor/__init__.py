"""anydoor: AnyDoor (Chen et al., CVPR 2024) — an object (background removed) placed into a scene's box, zero-shot:
ID tokens (image encoder class + patch tokens -> trained projection) replace the text context; a 4-channel-hint
ControlNet reads the scene with the object's high-frequency map in the box; the UNet decoder trains with it."""

from __future__ import annotations

from tailor.core import resources
from tailor.core.method import MethodSpec
from tailor.core.surface import GenerateInput, Input, InputOption
from tailor.methods.anydoor.config import AnyDoorConfig
from tailor.methods.anydoor.method import AnyDoorMethod


def example_inputs(components) -> dict:
    """A world object (its mask) placed into another world scene's box."""
    import tailor.world as world
    from tailor.world.pairs import render_pair

    ref, tgt = render_pair(5, size=components.default_size)
    x0, y0, x1, y1 = tgt.box
    del world
    return {"object": [ref.pil()], "object_mask": ref.mask * 255, "scene": tgt.image, "box": f"{x0},{y0},{x1},{y1}"}


# ``--anydoor world``: the shipped world weights (``python -m zoo.anydoor``); a string provider, so nothing under
# tailor.world is imported until the name is used
resources.register(
    "artifact:anydoor", "tailor.methods.anydoor.data:shipped", "tailor.methods.anydoor.data:shipped_names"
)

SPEC = MethodSpec(
    name="anydoor",
    method=AnyDoorMethod,
    config=AnyDoorConfig,
    summary="object -> ID tokens replacing the text + ControlNet on the scene with the object's HF map in a box",
    paper="Chen et al., CVPR 2024, AnyDoor: Zero-shot Object-level Image Customization",
    builds_on=("controlnet",),
    test_options={"image_encoder": "tiny", "rank": 2},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--anydoor",
        "AnyDoor model (a training --out folder, an anydoor file, an official checkpoint, or world: shipped) and the "
        "object image to place (background removed: white, transparent or --object-mask); needs --scene and --box; "
        "the prompt is not read (AnyDoor replaces the text context).",
        input=Input(
            "object",
            "images",
            flag="--object",
            help="The object image for --anydoor (on white or transparent background).",
            options=(
                InputOption("scene", "--scene", help="The scene image --anydoor places the object into."),
                InputOption("box", "--box", help="Where in --scene: x0,y0,x1,y1 in scene pixels.", metavar="BOX"),
                InputOption("object_mask", "--object-mask", help="Mask of the --object image (same size)."),
            ),
        ),
        max_weight=2.0,
    ),
)

__all__ = ["SPEC", "AnyDoorConfig", "AnyDoorMethod"]
