"""storygen: Intelligent Grimm's context module (Liu et al. 2024) — a trained ``attn3`` per transformer block reading
the frozen UNet's features of up to 3 previous frames; ``tailor generate --story PROMPTS_FILE``."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input
from tailor.methods.storygen.config import StoryGenConfig
from tailor.methods.storygen.method import StoryGenMethod, three_way


def example_inputs(components) -> dict:
    """Two fixed previous frames (gradients) at the base's output size, with their prompts."""
    import numpy as np
    from PIL import Image

    n = components.default_size
    y, x = np.mgrid[0:n, 0:n] * (240 // max(n, 1))
    first = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    return {"frames": [Image.fromarray(first), Image.fromarray(first[::-1].copy())],
            "frame_prompts": ["a photo of a red star on grass", "a photo of a red star jumping on snow"]}  # fmt: skip


SPEC = MethodSpec(
    name="storygen",
    method=StoryGenMethod,
    config=StoryGenConfig,
    summary="story visualisation: a trained attn3 per block attends to the frozen UNet's features of the previous "
    "frames (noised); 3-way image/text guidance; tailor generate --story",
    paper="Liu et al. 2024, Intelligent Grimm: Open-ended Visual Storytelling via Latent Diffusion Models (CVPR)",
    test_options={"frames_per_story": 2},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--storygen",
        "StoryGen context weights PATH[=FRAME+FRAME...][:weight[:start:end]] (the frames are previous frames, oldest "
        "first; with --story the frames made so far).",
        input=Input("frames", "images", optional=True),
        options=("image_guidance", "max_frames"),
    ),
    bench=(
        BenchRow("story", "storygen", 0, 0.0, note="the shipped world weights; every earlier frame (up to 3)"),
        BenchRow("story", "storygen-img1", 0, 0.0, options={"image_guidance": 1.0}, note="2-way guidance only"),
    ),
)

__all__ = ["SPEC", "StoryGenConfig", "StoryGenMethod", "three_way"]
