"""``--kind glyph``: a word on a sign, plate or object in the shipped font (:mod:`.glyphs`); the glyph image is
written beside each image (``extras/``), the text and per-line polygons in ``labels.json``."""

from __future__ import annotations

import re

from tailor.world.kinds import Option, RenderKind


def render(seed: int, *, size: int = 64, prompt: str | None = None, text=None, surface=None, style=None):
    """A prompt's quoted word, surface (sign / plate / object), background and style are used; the rest is drawn."""
    from tailor.world.captions import parse_prompt
    from tailor.world.glyphs import SURFACES, render_glyph

    p = parse_prompt(prompt) if prompt else {}
    if prompt and text is None and (quoted := re.search(r'"([^"]+)"', prompt)):
        text = quoted.group(1)
    if prompt and surface is None:
        surface = next((s for s in SURFACES if re.search(rf"\b{s}\b", prompt.lower())), None)
    sample = render_glyph(
        seed,
        text=text,
        surface=surface,
        background=p.get("background"),
        style=style or p.get("style") or "photo",
        size=size,
    )
    return [sample]


def dataset(seed: int, style: str, size: int):
    from tailor.world.glyphs import render_glyph

    return render_glyph(seed, style=style, size=size)


KIND = RenderKind(
    name="glyph",
    help="A word on a sign, plate or object ('a sign that says \"CAT\" on brick'), with per-line polygons.",
    render=render,
    options=(
        Option("text", str, None, "The word (A-Z, 0-9; default: drawn, or the prompt's quoted word)."),
        Option("surface", str, None, "sign, plate or object (default: drawn, or the prompt's)."),
        Option("style", str, None, "Render style (default: photo, or the prompt's)."),
    ),
    layout="flat",
    takes_prompt=True,
    dataset=dataset,
)
