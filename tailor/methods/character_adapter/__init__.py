"""character_adapter: Character-Adapter (Ma et al. 2024) — training-free region-level image prompts on an
IP-Adapter, each region gated by where its word attends."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input
from tailor.methods.character_adapter.config import CharacterAdapterConfig
from tailor.methods.character_adapter.method import CharacterAdapterMethod


def example_inputs(components) -> dict:
    """Two coloured squares on grey, given as masks of the words of the conformance prompt ("red", "star")."""
    import numpy as np
    from PIL import Image

    n = components.default_size
    arr = np.full((n, n, 3), 128, np.uint8)
    arr[2 : n // 2, 2 : n // 2] = (220, 30, 30)
    arr[n // 2 :, n // 2 :] = (30, 30, 220)
    red, star = np.zeros((n, n), bool), np.zeros((n, n), bool)
    red[2 : n // 2, 2 : n // 2] = True
    star[n // 2 :, n // 2 :] = True
    return {"reference": Image.fromarray(arr), "masks": {"red": red, "star": star}}


def _row(key: str, note: str, default: bool = True, **options) -> BenchRow:
    """A ``tailor bench twosubjects`` row: training-free (no steps), ``options`` on the method."""
    return BenchRow("twosubjects", key, 0, 0.0, options=options, note=f"training-free {note}", default=default)


SPEC = MethodSpec(
    name="character_adapter",
    method=CharacterAdapterMethod,
    config=CharacterAdapterConfig,
    summary="training-free region-level IP-Adapter: one set of image tokens per reference region, each region's "
    "output gated by the cross-attention map of its word",
    paper="Ma et al. 2024, Character-Adapter: Prompt-Guided Region Control for High-Fidelity Character Customization",
    builds_on=("ip_adapter",),
    test_options={"ip_adapter": "untrained:tiny"},
    generate=GenerateInput(
        "--character-adapter",
        "Reference image IMG[:weight[:start:end]] cut into regions (world segmenter classes that are words of the "
        "prompt); each region's IP-Adapter tokens act where its word attends (repeatable).",
        input=Input("reference", "images"),
        max_weight=5.0,
        options=("regions", "ip_adapter", "segmenter"),
    ),
    bench=(
        _row(
            "character-adapter", "on the shipped IP-Adapter; one region per object (exact masks)", ip_adapter="world"
        ),
        _row(
            "character-adapter-plus",
            "on the shipped IP-Adapter-Plus; one region per object (exact masks)",
            ip_adapter="world-plus",
        ),
        _row(
            "character-adapter-seg",
            "on the shipped IP-Adapter; regions cut by the scene-trained world segmenter",
            ip_adapter="world",
            segmenter="segmenter_scenes",
        ),
        _row(
            "character-adapter-plus-seg",
            "on the shipped IP-Adapter-Plus; regions cut by the scene-trained world segmenter",
            ip_adapter="world-plus",
            segmenter="segmenter_scenes",
        ),
        _row(
            "character-adapter-seg-old",
            "as character-adapter-seg with the first world segmenter (one-object renders only)",
            default=False,
            ip_adapter="world",
            segmenter="segmenter",
        ),
    ),
    example_inputs=example_inputs,
)

__all__ = ["SPEC", "CharacterAdapterConfig", "CharacterAdapterMethod"]
