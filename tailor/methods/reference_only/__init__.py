"""reference_only: training-free reference-image control through the base UNet's own self-attention / feature
statistics (sd-webui-controlnet's reference modes)."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input
from tailor.methods.reference_only.config import MAX_WEIGHT, ReferenceOnlyConfig
from tailor.methods.reference_only.method import ReferenceOnlyMethod


def example_inputs(components) -> dict:
    """A fixed colour-gradient reference at the base's output size."""
    import numpy as np
    from PIL import Image

    n = components.default_size
    y, x = np.mgrid[0:n, 0:n] * (240 // max(n, 1))
    arr = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    return {"reference": Image.fromarray(arr)}


SPEC = MethodSpec(
    name="reference_only",
    method=ReferenceOnlyMethod,
    config=ReferenceOnlyConfig,
    summary="training-free reference image: the UNet's self-attention also attends to a reference pass (attn), "
    "and/or matches its feature statistics (adain)",
    paper="lllyasviel 2023, sd-webui-controlnet reference-only; diffusers community stable_diffusion_reference",
    generate=GenerateInput(
        "--reference-only",
        "Reference image(s) IMG[+IMG...][:weight[:start:end]] for training-free reference-only control (weight in "
        "[0, 2] gates layers as sd-webui-controlnet's; repeatable).",
        input=Input("reference", "images"),
        max_weight=MAX_WEIGHT,
        options=("mode", "style_fidelity", "reference_pass"),
    ),
    bench=(
        BenchRow("image_prompt", "reference-attn", 0, 0.0, options={"mode": "attn"}, note="training-free"),
        BenchRow(
            "image_prompt", "reference-adain+attn", 0, 0.0, options={"mode": "attn+adain"}, note="training-free"
        ),  # fmt: skip
        BenchRow("story", "reference-attn", 0, 0.0, options={"mode": "attn"}, note="training-free; frame 1"),
    ),
    example_inputs=example_inputs,
)

__all__ = ["SPEC", "ReferenceOnlyConfig", "ReferenceOnlyMethod"]
