"""``--kind pair``: one object instance in 2+ scenes (pose, scale, background, style, light) (:mod:`.pairs`)."""

from __future__ import annotations

from tailor.world.kinds import Option, RenderKind


def render(seed: int, *, size: int = 64, prompt: str | None = None, views: int = 2, instance=None, style=None):
    from tailor.world.pairs import render_pair

    return render_pair(seed, views=views, instance=instance, styles=(style,) if style else None, size=size)


def dataset(seed: int, style: str, size: int):
    from tailor.world.pairs import render_view
    from tailor.world.vocab import make_rng

    return render_view(int(make_rng(seed, 48).integers(1 << 20)), seed, style=style, size=size)


KIND = RenderKind(
    name="pair",
    help="The same object instance (shape, colours, pattern, decal) in several scenes, with boxes and masks.",
    render=render,
    options=(
        Option("views", int, 2, "Scenes per instance (2-16)."),
        Option("instance", int, None, "Instance id (default: one drawn per group)."),
        Option("style", str, None, "One render style for every view (default: a different style per view)."),
    ),
    layout="views",
    dataset=dataset,
)
