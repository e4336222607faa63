"""elite: ELITE (Wei et al., ICCV 2023) — a reference image -> words at the placeholder in the text encoder's input
(global mapper, trainable attn2 K/V copies) + masked patch tokens in a cross-attention gated by the placeholder's
attention map (local mapper); one forward pass per new subject."""

from __future__ import annotations

from tailor.core.method import MethodSpec
from tailor.core.surface import GenerateInput, Input, InputOption
from tailor.methods.elite.config import ELITEConfig
from tailor.methods.elite.method import ELITEMethod


def example_inputs(components) -> dict:
    """A world photo of one object as the reference (the conformance prompt's one-token word "a" is the
    placeholder: the tiny tokenizer splits other words)."""
    import tailor.world as world

    return {"elite_image": [world.render("a photo of a red striped star on grass", 3).pil()]}


SPEC = MethodSpec(
    name="elite",
    method=ELITEMethod,
    config=ELITEConfig,
    summary="image -> words at a placeholder (global mapper, attn2 K/V copies) + gated local patch attention",
    paper="Wei et al., ICCV 2023, ELITE: Encoding Visual Concepts into Textual Embeddings for Customized T2I",
    test_options={"image_encoder": "tiny", "mapper_width": 16, "placeholder": "a"},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--elite",
        "ELITE model (a training --out folder, an elite file, official global_mapper.pt, or world: shipped) and its "
        "reference image; the prompt names the subject by the placeholder ('a photo of a S on snow'); repeatable.",
        input=Input(
            "elite_image",
            "images",
            help="Reference image of the subject for --elite.",
            options=(
                InputOption("mask", "--elite-mask", help="Mask of the subject in the --elite reference (same size)."),
                InputOption("lambda", "--elite-lambda", help="Weight of ELITE's local attention (official 0.8)."),
            ),
        ),
        max_weight=5.0,
    ),
    bench=(),
)

__all__ = ["SPEC", "ELITEConfig", "ELITEMethod"]
