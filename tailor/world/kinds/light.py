"""``--kind light``: an object, a face or a scene lit as albedo x sum of lights in linear space (:mod:`.light`);
the albedo, foreground and background are written beside each image (``extras/``)."""

from __future__ import annotations

from tailor.world.kinds import Option, RenderKind


def render(seed: int, *, size: int = 64, prompt: str | None = None, subject=None, style=None):
    """A prompt states the subject, its attributes and the lights (``lit from the left by warm light``); the rest is
    drawn from ``seed``."""
    from tailor.world.captions import parse_prompt
    from tailor.world.light import parse_lights, render_lit

    p = parse_prompt(prompt) if prompt else {}
    if prompt and subject is None:
        subject = p["kind"] if (p["kind"] != "object" or p["shape"]) else None
    sample = render_lit(
        seed,
        subject=subject,
        lights=parse_lights(prompt) if prompt else None,
        shape=p.get("shape"),
        color=p.get("color"),
        pattern=p.get("pattern"),
        background=p.get("background"),
        style=style or p.get("style") or "photo",
        size=size,
    )
    return [sample]


def dataset(seed: int, style: str, size: int):
    from tailor.world.light import render_lit

    return render_lit(seed, style=style, size=size)


KIND = RenderKind(
    name="light",
    help="An object, face or scene lit by directional / point lights (linear light sum), with albedo and background.",
    render=render,
    options=(
        Option("subject", str, None, "object, face or scene (default: drawn, or the prompt's)."),
        Option("style", str, None, "Render style (default: photo, or the prompt's)."),
    ),
    layout="flat",
    takes_prompt=True,
    dataset=dataset,
)
