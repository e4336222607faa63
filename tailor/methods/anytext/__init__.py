"""anytext: AnyText (Tuo et al. 2023, ICLR 2024) — text lines drawn where asked: an auxiliary latent module (glyph
image, position mask, masked-image latent) in a ControlNet and each line's recognizer features in place of the
prompt's placeholder; trained with an OCR perceptual loss."""

from tailor.core import resources
from tailor.core.method import MethodSpec
from tailor.core.surface import GenerateInput, Input, InputOption
from tailor.methods.anytext.config import AnyTextConfig
from tailor.methods.anytext.method import AnyTextMethod

# ``--anytext world`` and ``recognizer=world``: the shipped world weights
resources.register("artifact:anytext", "tailor.methods.anytext.shipped:world", "tailor.methods.anytext.shipped:names")


def example_inputs(components) -> dict:
    """One line in the upper half of the base's default size."""
    s = components.default_size
    return {"text": "AB", "text_box": [f"1,1,{s - 1},{s // 2}"]}


TEXT_INPUT = Input(
    "text",
    "paths",
    flag="--text",
    help="A text line for --anytext (A-Z, 0-9; repeatable, paired in order with --text-box); the prompt holds its "
    'place as * or as the quoted text: a sign that says "CAT".',
    options=(
        InputOption(
            "text_box",
            "--text-box",
            "Where a --text line goes: x0,y0,x1,y1 in pixels of the output (one per --text, in order).",
            multiple=True,
            metavar="X0,Y0,X1,Y1",
        ),
    ),
)

SPEC = MethodSpec(
    name="anytext",
    method=AnyTextMethod,
    config=AnyTextConfig,
    summary="text rendering: glyph + position + masked-image latent in a ControlNet, recognizer features as words",
    paper="Tuo et al. 2023, AnyText: Multilingual Visual Text Generation and Editing (ICLR 2024)",
    test_options={"recognizer": "random", "missing_placeholder": "skip"},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--anytext",
        "AnyText model (a training --out folder, an anytext file, an official-layout file, or world: shipped); "
        "its lines come from --text / --text-box.",
        input=TEXT_INPUT,
    ),
)

__all__ = ["SPEC", "AnyTextConfig", "AnyTextMethod"]
