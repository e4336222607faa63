"""infinite_id: Infinite-ID (Wu et al. 2024) — face-embedding + CLIP ID tokens in decoupled cross-attention trained
with the text cross-attention off; at inference an ID stream and a text stream share self-attention keys / values
(mixed attention) with AdaIN-mean."""

from __future__ import annotations

from tailor.core import resources
from tailor.core.image_prompt import MAX_SCALE
from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow, GenerateInput
from tailor.faces.id_adapter import FACE_INPUT
from tailor.methods.infinite_id.config import InfiniteIDConfig
from tailor.methods.infinite_id.method import InfiniteIDMethod


def example_inputs(components) -> dict:
    import tailor.world as world

    return {"face": world.render_face(3, identity=901).pil()}


# ``--infinite-id world``: the shipped world weights (``python -m zoo.infinite_id``), as ``--instantid world``
resources.register("artifact:infinite_id", "tailor.methods.infinite_id.resources:shipped",
                   "tailor.methods.infinite_id.resources:shipped_names")  # fmt: skip


def _row(key: str, note: str, default: bool = False, **options) -> BenchRow:
    """A zero-shot row of `tailor bench identity` on the shipped world weights with these inference options."""
    return BenchRow("identity", key, 0, 0.0, options, model="world", default=default, note=f"zero-shot: {note}")


SPEC = MethodSpec(
    name="infinite_id",
    method=InfiniteIDMethod,
    config=InfiniteIDConfig,
    summary="identity: face + CLIP ID tokens trained with text cross-attention off; an ID stream and a text stream "
    "share self-attention (mixed attention, AdaIN-mean)",
    paper="Wu et al. 2024, Infinite-ID: Identity-preserved Personalization via ID-semantics Decoupling Paradigm",
    test_options={"num_tokens": 2, "clip_tokens": 2, "resampler_depth": 1, "image_encoder": "tiny"},
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--infinite-id",
        "Infinite-ID model (a training --out folder, or world: shipped) and its reference face(s); the --face images "
        "when none is given; repeatable.",
        input=FACE_INPUT,
        max_weight=MAX_SCALE,
    ),
    # zero-shot rows of `tailor bench identity` on the shipped world weights (python -m zoo.infinite_id): the ID +
    # text streams with the text stream's unconditional rows keeping their own self-attention (style_fidelity 1, the
    # default) or reading the ID stream too (sf0), each without / with AdaIN-mean; and the plain decoupled adapter
    bench=(
        _row("infinite_id", "ID + text streams, mixed attention", True, adain_mean=False, style_fidelity=1.0),
        _row("infinite_id-adain", "mixed attention + AdaIN-mean", adain_mean=True, style_fidelity=1.0),
        _row("infinite_id-sf0", "mixed attention in the unconditional rows too", adain_mean=False, style_fidelity=0.0),
        _row("infinite_id-sf0-adain", "as sf0, + AdaIN-mean", adain_mean=True, style_fidelity=0.0),
        _row(
            "infinite_id-id2",
            "as the default row, the ID stream's image cross-attention x2",
            adain_mean=False,
            style_fidelity=1.0,
            id_scale=2.0,
        ),
        _row("infinite_id-plain", "ID tokens in the text stream's cross-attention (no ID stream)", mixed=False),
    ),  # fmt: skip
)

__all__ = ["SPEC", "InfiniteIDConfig", "InfiniteIDMethod"]
