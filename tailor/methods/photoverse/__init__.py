"""photoverse: PhotoVerse (Chen et al. 2023) — one face photo -> a pseudo-word in the text encoder's input (text
adapter) + tokens in a parallel image cross-attention (image adapter), LoRA on the cross-attention keys / values,
trained with a face-ID loss on the predicted clean image; tuning-free (optional few-step test-time LoRA tuning)."""

from __future__ import annotations

from tailor.core import resources
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.faces.id_adapter import FACE_INPUT
from tailor.methods.photoverse.config import MAX_SCALE, PhotoVerseConfig
from tailor.methods.photoverse.method import PhotoVerseMethod


def example_inputs(components) -> dict:
    """A world face render as the reference; the conformance prompt has no placeholder, so ``class_word`` puts it
    before "star" (mechanics only)."""
    import tailor.world as world

    return {"face": world.render_face(3, identity=901).pil(), "class_word": "star"}


# ``--photoverse world`` / ``--photoverse photoverse``: the shipped world weights (``python -m zoo.photoverse``)
resources.register(
    "artifact:photoverse", "tailor.methods.photoverse.data:shipped", "tailor.methods.photoverse.data:shipped_names"
)

SPEC = MethodSpec(
    name="photoverse",
    method=PhotoVerseMethod,
    config=PhotoVerseConfig,
    summary="identity: one face -> pseudo-word (text adapter) + image cross-attention tokens, LoRA on cross-attn K/V",
    paper="Chen et al. 2023, PhotoVerse: Tuning-Free Image Customization with Text-to-Image Diffusion Models",
    test_options={"image_encoder": "tiny", "adapter_width": 16, "image_tokens": 2, "placeholder": "a"},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--photoverse",
        "PhotoVerse model (a training --out folder, or world / photoverse: shipped) and its reference face; the "
        "--face images when none is given; the prompt names the face by the placeholder before the class word "
        "('a photo of a S woman on snow'); repeatable.",
        input=FACE_INPUT,
        max_weight=MAX_SCALE,
        class_input="class_word",
        options=("tune_steps",),  # --photoverse-tune-steps N: a few test-time LoRA steps on the references
    ),
    # zero-shot on the shipped weights: the encoder alone (the paper) and with a few test-time LoRA steps on the
    # references (seconds per new subject: the bench's train column)
    bench=(
        BenchRow("identity", "photoverse", 0, 0.0, model="world", note="encoder only (the paper: tuning-free)"),
        BenchRow(
            "identity",
            "photoverse-tune",
            0,
            0.0,
            {"tune_steps": 20},
            model="world",
            note="+ 20 test-time LoRA steps on the references",
        ),  # fmt: skip
    ),
)

__all__ = ["SPEC", "PhotoVerseConfig", "PhotoVerseMethod"]
