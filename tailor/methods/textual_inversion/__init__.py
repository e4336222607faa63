"""textual_inversion: new placeholder token(s) S* learned in the frozen text encoder's embedding space (Gal et al.)."""

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.methods.textual_inversion.config import TextualInversionConfig
from tailor.methods.textual_inversion.method import TextualInversionMethod

SPEC = MethodSpec(
    name="textual_inversion",
    method=TextualInversionMethod,
    config=TextualInversionConfig,
    summary="learn a new placeholder token S* (one or several embedding vectors) for a subject or style",
    paper="Gal et al. 2022 (An Image is Worth One Word)",
    subject_fields={"token": "token", "class": "init_word"},
    # the conformance prompt "a photo of a red star" must use the token for a training step to show
    test_options={"token": "star", "init_word": "shape"},
    generate=GenerateInput(
        "--embedding",
        "Embedding file (A1111 .pt / .safetensors, diffusers learned_embeds or tailor); repeatable.",
        dir_flag="--embedding-dir",
        by_name=True,
    ),
    bench=(
        BenchRow(
            "personalize",
            "textual_inversion",
            120,
            2e-2,
            {"token": "<s*>", "templates": "caption"},
            note="one vector initialised from the class word; paper lr 5e-3 x 5000 steps",
        ),
    ),
)

__all__ = ["SPEC", "TextualInversionConfig", "TextualInversionMethod"]
