"""ic_light: relighting by foreground (+ background) latents concatenated to the UNet input (Zhang et al. 2025)."""

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input, InputOption
from tailor.methods.ic_light.config import IcLightConfig
from tailor.methods.ic_light.method import IcLightMethod


def example_inputs(components) -> dict:
    """A grey-backed RGBA disc as the foreground and a left-to-right gradient as the background."""
    import numpy as np
    from PIL import Image

    size = components.default_size
    y, x = np.mgrid[0:size, 0:size]
    disc = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2).astype(np.uint8) * 255
    rgba = np.stack([x * 255 // size, 200 - y * 100 // size, np.full_like(x, 60), disc], -1).astype(np.uint8)
    grad = np.repeat(np.linspace(224, 32, size)[None, :, None], size, 0).repeat(3, 2).astype(np.uint8)
    return {"foreground": [Image.fromarray(rgba, "RGBA"), Image.fromarray(grad)]}


SPEC = MethodSpec(
    name="ic_light",
    method=IcLightMethod,
    config=IcLightConfig,
    summary="relighting: foreground (fc) or foreground + background (fbc) latents as extra UNet input channels",
    paper="Zhang, Rao, Agrawala 2025 (IC-Light, ICLR 2025)",
    test_options={"mode": "fbc"},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--ic-light",
        "IC-Light model (a tailor file or the official offsets file, fc or fbc) and its foreground image (RGBA: "
        "alpha = the object), plus the background for fbc: MODEL=FG[+BG]; repeatable.",
        input=Input(
            "foreground",
            "paths",
            flag="--foreground",
            help="IC-Light's foreground image (RGBA: alpha = the object) [+ background for fbc].",
            options=(
                InputOption(
                    "foreground_mask",
                    "--foreground-mask",
                    help="IC-Light: the foreground's mask (white = the object) when its image has no alpha channel.",
                ),
            ),
        ),
    ),
    # tailor bench relight: the ablation at equal schedules on the same lit triplets and seed, in the zoo's compact
    # form (conv_in + biases / norms in full, rank-16 LoRA elsewhere; lr 5e-4, conv_in at 2x), each mode with and
    # without the light-transport consistency (the paper: without it albedo and material drift)
    bench=tuple(
        BenchRow(
            "relight",
            mode + ("+consistency" if w else ""),
            150,
            5e-4,
            {"mode": mode, "consistency_weight": w, "input_lr_scale": 2.0, "unet_rank": 16},
            batch_size=4,
            note="consistency loss, the paper's weight 0.1" if w else "no consistency loss",
        )
        for mode in ("fc", "fbc")
        for w in (0.0, 0.1)
    ),
)

__all__ = ["SPEC", "IcLightConfig", "IcLightMethod"]
