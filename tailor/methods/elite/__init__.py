"""elite: ELITE (Wei et al., ICCV 2023) — a reference image -> words at the placeholder in the text encoder's input
(global mapper, trainable attn2 K/V copies) + masked patch tokens in a cross-attention gated by the placeholder's
attention map (local mapper); one forward pass per new subject."""

from __future__ import annotations

from tailor.core import resources
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input, InputOption
from tailor.methods.elite.config import ELITEConfig
from tailor.methods.elite.method import ELITEMethod


def example_inputs(components) -> dict:
    """A world photo of one object as the reference (the conformance prompt's one-token word "a" is the
    placeholder: the tiny tokenizer splits other words)."""
    import tailor.world as world

    return {"elite_image": [world.render("a photo of a red striped star on grass", 3).pil()]}


# ``--elite world=IMG``: the world weights (``python -m zoo.elite``), as ``--photomaker world``; a string provider, so
# nothing under tailor.world is imported until the name is used
resources.register("artifact:elite", "tailor.methods.elite.data:shipped", "tailor.methods.elite.data:shipped_names")

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
        class_input="class_word",
    ),
    # zero-shot rows on the shipped world weights: the global mapper alone (lambda 0: the local attention adds
    # nothing, the same as the global stage's model) and a lambda sweep of the local mapper (official 0.8); asked
    # for by key (`tailor bench image_prompt --reference-row elite ...`), as they need the shipped world base
    bench=tuple(
        BenchRow("image_prompt", key, 0, 0.0, {"llambda": lam} | extra, model="world", note=note, default=False)
        for key, lam, extra, note in (
            ("elite-global", 0.0, {}, "global mapper only (lambda 0)"),
            ("elite-l0.4", 0.4, {}, "global + local, lambda 0.4"),
            ("elite", 0.8, {}, "global + local, lambda 0.8 (official)"),
            ("elite-l1.6", 1.6, {}, "global + local, lambda 1.6"),
            ("elite-maxgate", 0.8, {"gate": "max"}, "lambda 0.8 with the official gate m / max m"),
        )
    ),
)

__all__ = ["SPEC", "ELITEConfig", "ELITEMethod"]
