"""ref_unet: IDM-VTON's try-on (Choi et al. 2024) — a 13-channel inpainting TryonNet whose self-attention reads a
frozen reference UNet's features of the reference image, plus IP-Adapter-Plus tokens of it."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.core.surface import GenerateInput, Input
from tailor.methods.ref_unet.config import RefUnetConfig
from tailor.methods.ref_unet.method import RefUnetMethod


def example_inputs(components) -> dict:
    """A striped scene with a centred square masked, a checkered reference and the square's silhouette."""
    import numpy as np
    from PIL import Image

    n = components.default_size
    y, x = np.mgrid[0:n, 0:n]
    scene = np.stack([x * 200 // n, y * 200 // n, np.full_like(x, 90)], -1).astype(np.uint8)
    ref = (((x // 4 + y // 4) % 2) * 200 + 30)[..., None].repeat(3, -1).astype(np.uint8)
    box = (abs(x - n / 2) < n / 5) & (abs(y - n / 2) < n / 5)
    mask = (box * 255).astype(np.uint8)
    return {"tryon": [Image.fromarray(scene), Image.fromarray(ref), Image.fromarray(mask),
                      Image.fromarray(np.repeat(mask[..., None], 3, -1))]}  # fmt: skip


SPEC = MethodSpec(
    name="ref_unet",
    method=RefUnetMethod,
    config=RefUnetConfig,
    summary="try-on: a 13-channel inpainting UNet (mask + masked image + shape map) whose self-attention reads a "
    "frozen reference UNet's features of the reference (cropped back), plus IP-Adapter-Plus tokens",
    paper="Choi et al. 2024, Improving Diffusion Models for Authentic Virtual Try-on in the Wild (IDM-VTON, ECCV)",
    builds_on=("ip_adapter",),
    test_options={"ip_adapter": "", "rank": 2},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--ref-unet",
        "ref_unet (try-on) weights or the shipped name ref-unet, with the scene, the reference object, the mask "
        "(white = repaint) and optionally the shape map: PATH=SCENE+REF+MASK[+SHAPE]; output size = the scene's.",
        input=Input("tryon", "images"),
    ),
)

__all__ = ["SPEC", "RefUnetConfig", "RefUnetMethod"]
