"""ip_adapter: IP-Adapter / IP-Adapter-Plus (Ye et al. 2023) — an image prompt through decoupled cross-attention."""

from __future__ import annotations

from tailor.core.image_prompt import MAX_SCALE
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input
from tailor.methods.ip_adapter.config import IPAdapterConfig
from tailor.methods.ip_adapter.method import IPAdapterMethod


def example_inputs(components) -> dict:
    """A fixed 40x40 colour-gradient reference image (any size works: the CLIP processor resizes it)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:40, 0:40]
    arr = np.stack([x * 6, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)
    return {"ip_image": Image.fromarray(arr)}


SPEC = MethodSpec(
    name="ip_adapter",
    method=IPAdapterMethod,
    config=IPAdapterConfig,
    summary="image prompt: CLIP image embedding -> tokens -> decoupled cross-attention (plain 4 tokens, or --plus)",
    paper="Ye et al. 2023, IP-Adapter: Text Compatible Image Prompt Adapter for Text-to-Image Diffusion Models",
    test_options={"image_encoder": "tiny"},
    generate=GenerateInput(
        "--ip-adapter",
        "IP-Adapter file or shipped name (world, world-plus) and its reference image(s), or PATH alone paired with "
        "the --ip-image of the same index; scale in [0, 5]; repeatable.",
        input=Input(
            "ip_image",
            "images",
            flag="--ip-image",
            pairing="index",
            help="Reference image IMG[+IMG...][:scale] for the --ip-adapter of the same index (repeatable).",
        ),
        max_weight=MAX_SCALE,
    ),
    bench=(
        BenchRow("story", "ip-adapter", 0, 0.0, note="the shipped world weights; frame 1 as the image prompt"),
        BenchRow("twosubjects", "ip-adapter", 0, 0.0, model="world", note="the whole two-object reference"),
        BenchRow("twosubjects", "ip-adapter-plus", 0, 0.0, model="world-plus", note="the whole two-object reference"),
    ),
    example_inputs=example_inputs,
)

__all__ = ["SPEC", "IPAdapterConfig", "IPAdapterMethod"]
