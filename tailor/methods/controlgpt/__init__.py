"""controlgpt: Control-GPT (Zhang et al. 2023) — a planner writes a layout program (boxes, relations, a sketch);
a ControlNet reads the sketch and grounding tokens {object name, box}."""

from tailor.core import resources
from tailor.core.method import MethodSpec
from tailor.core.surface import GenerateInput, Input, InputOption
from tailor.methods.controlgpt.config import ControlGPTConfig
from tailor.methods.controlgpt.method import ControlGPTMethod

# ``--controlgpt controlgpt-sketch`` (or ``world``): the shipped world weights
resources.register("artifact:controlgpt", "tailor.methods.controlgpt.shipped:world",
                   "tailor.methods.controlgpt.shipped:names")  # fmt: skip


def example_inputs(components) -> dict:
    """A two-object layout program of the base's default size."""
    s = components.default_size
    star = {"name": "star", "color": "red", "box": [2, s // 4, s // 2 - 2, 3 * s // 4]}
    circle = {"name": "circle", "color": "blue", "box": [s // 2 + 2, s // 4, s - 2, 3 * s // 4]}
    relation = {"subject": 0, "relation": "left of", "object": 1}
    return {"layout": {"size": s, "objects": [star, circle], "relations": [relation]}}


LAYOUT_INPUT = Input(
    "layout",
    "paths",
    flag="--layout",
    help="A layout program JSON for --controlgpt: objects (name, color, pattern, box [x0,y0,x1,y1] in pixels) and "
    "relations; without --layout / --plan each prompt is planned by the built-in rule planner.",
    optional=True,
    options=(
        InputOption(
            "plan",
            "--plan",
            "Plan the layout of this description (rule planner, or --planner-url).",
            metavar="TEXT",
            prompt=True,
        ),
        InputOption(
            "planner_url",
            "--planner-url",
            "An OpenAI-compatible chat-completions URL that plans the layout "
            "(a language model; bearer key from $TAILOR_PLANNER_API_KEY); default: the rule planner.",
            metavar="URL",
        ),
        InputOption(
            "planner_model", "--planner-model", "The model name sent to --planner-url (default gpt-4).", metavar="NAME"
        ),
    ),  # fmt: skip
)

SPEC = MethodSpec(
    name="controlgpt",
    method=ControlGPTMethod,
    config=ControlGPTConfig,
    summary="planner -> layout program -> sketch ControlNet with grounding tokens {object name, box} in its context",
    paper="Zhang et al. 2023, Controllable Text-to-Image Generation with GPT-4 (arXiv 2305.18583)",
    test_options={},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--controlgpt",
        "Control-GPT model (a training --out folder, a controlgpt file, or controlgpt-sketch: shipped); its layout "
        "comes from --layout FILE.json, --plan TEXT, or each prompt (rule planner).",
        input=LAYOUT_INPUT,
    ),
)

__all__ = ["SPEC", "ControlGPTConfig", "ControlGPTMethod"]
